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
from mlgate.api.routes.metrics import metrics_router
from mlgate.observability.http import ObservabilityMiddleware
from mlgate.observability.metrics import Metrics, multiprocess_dir
from mlgate.observability.tracing import build_tracing
from mlgate.settings import Settings

#: Headers a browser client may send cross-origin: credentials, the request id, binary
#: tensors' header length, compressed bodies, and W3C trace context (which OpenTelemetry's
#: browser instrumentation adds to every fetch).
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Content-Encoding",
    "X-API-Key",
    "X-Request-ID",
    "Inference-Header-Content-Length",
    "traceparent",
    "tracestate",
]
#: Response headers a browser client may read: ids, limits and waits, the cache's verdict,
#: binary tensors' header length, the trace, why credentials were refused.
CORS_RESPONSE_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Cache",
    "Inference-Header-Content-Length",
    "traceparent",
    "WWW-Authenticate",
]


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
    # The app's own metrics registry (multiprocess when `mlgate serve --workers N` set
    # the directory up); hooked onto the data plane and the rest by the lifespan.
    metrics = Metrics(multiprocess=multiprocess_dir()) if settings.metrics.enabled else None
    app.state.metrics = metrics
    app.state.tracing = build_tracing(settings.tracing)  # None unless configured
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
    if metrics is not None:
        app.include_router(metrics_router(settings.metrics))
    # Innermost of the middleware: CORS and the request context apply to it too.
    app.add_middleware(
        HotRoutes,
        routes=[
            ("/v1/models/{model}/predict", predict.hot_predict),
            ("/v1/models/{model}/predict/batch", predict.hot_predict_batch),
            ("/v1/models/{model}:predict", predict.hot_predict_v1_protocol),
            ("/v1/models/{model}/versions/{version}:predict", predict.hot_predict_v1_protocol),
            ("/predict", legacy.hot_predict),
            ("/predict/batch", legacy.hot_predict_batch),
            ("/v2/models/{model}/infer", oip.hot_infer),
            ("/v2/models/{model}/versions/{version}/infer", oip.hot_infer),
        ],
    )
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_RESPONSE_HEADERS,
        )
    # Every response, even a crash, gets the request id.
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.server.max_body_bytes)
    # Added last = outermost: measures and logs every answer, those above included.
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        access=settings.observability.access_log,
        tracing=app.state.tracing,
    )
    return app
