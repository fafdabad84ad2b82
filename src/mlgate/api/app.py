"""The app factory: ``create_app(settings)``; nothing is built at import time."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import mlgate
from mlgate.api.errors import install_error_handlers
from mlgate.api.hot import HotRoutes
from mlgate.api.lifespan import lifespan
from mlgate.api.middleware import RequestContextMiddleware
from mlgate.api.responses import ORJSONResponse
from mlgate.api.routes import (
    admin,
    admin_aliases,
    admin_devices,
    admin_keys,
    admin_users,
    auth,
    dashboard,
    devices,
    drift,
    health,
    legacy,
    models,
    oip,
    oip_repository,
    predict,
    predictions,
    quality,
    usage,
)
from mlgate.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build an isolated application; settings default to the environment."""
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="mlgate",
        version=mlgate.__version__,
        summary="Production gateway for ML inference",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        root_path=settings.server.root_path,
        # The documentation is open when enabled (the routes it lists still need
        # credentials); production turns it off unless MLGATE_SERVER__DOCS_ENABLED=true.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in (
        health.router,
        auth.router,
        models.router,
        drift.router,
        predict.router,
        devices.router,
        admin.router,
        admin_aliases.router,
        admin_users.router,
        admin_keys.router,
        admin_devices.router,
        legacy.router,
        oip.router,
        oip.models_router,
        oip_repository.router,
        predictions.router,
        quality.router,
        usage.router,
        dashboard.router,
    ):
        app.include_router(router)
    # Innermost of the middleware: CORS and the request context apply to it too.
    app.add_middleware(
        HotRoutes,
        routes=[
            (r"/v1/models/(?P<model>[^/]+)/predict", predict.hot_predict),
            (r"/v1/models/(?P<model>[^/]+)/predict/batch", predict.hot_predict_batch),
            (r"/predict", legacy.hot_predict),
            (r"/predict/batch", legacy.hot_predict_batch),
            (r"/v2/models/(?P<model>[^/]+)/infer", oip.hot_infer),
            (r"/v2/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)/infer", oip.hot_infer),
        ],
    )
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    # Added last = outermost: every response, even a crash, gets the request id.
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.server.max_body_bytes)
    return app
