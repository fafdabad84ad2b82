"""``GET /metrics``: Prometheus text, or OpenMetrics when the ``Accept`` header asks.

Needs the ``metrics:read`` (or ``admin``) scope unless ``MLGATE_METRICS__PUBLIC=true``.
Whichever worker answers, the counts are those of every worker of the server.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Security
from starlette.responses import Response

from mlgate.api.deps import StateDep
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES, require_scope
from mlgate.auth.scopes import METRICS_READ
from mlgate.errors import NotFound
from mlgate.observability.settings import MetricsSettings


def metrics_router(settings: MetricsSettings) -> APIRouter:
    """The metrics route at ``settings.path``, guarded unless the metrics are public."""
    dependencies = (
        [] if settings.public else [Security(require_scope(METRICS_READ), scopes=[METRICS_READ])]
    )
    router = APIRouter(
        tags=["health"],
        dependencies=dependencies,
        responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
    )

    @router.get(
        settings.path,
        summary="Prometheus metrics of every worker (text format, or OpenMetrics)",
        response_class=Response,
    )
    async def metrics(request: Request, state: StateDep) -> Response:
        instrumentation = state.instrumentation
        if instrumentation is None:
            raise NotFound("metrics are turned off (MLGATE_METRICS__ENABLED=false)")
        body, content_type = await instrumentation.scrape(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return router
