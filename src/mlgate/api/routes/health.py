"""Health, liveness and readiness probes (always open)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.responses import Response

import mlgate
from mlgate.api.deps import StateDep
from mlgate.api.errors import error_response
from mlgate.api.responses import ORJSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", summary="Service status, version, uptime and loaded models")
async def health(state: StateDep) -> Response:
    models = state.registry.models()
    ready = state.ready
    return ORJSONResponse(
        {
            "status": "healthy" if ready else "starting",
            "version": mlgate.__version__,
            "uptime_seconds": round(state.uptime_seconds, 3),
            "models_loaded": [e.name for e in models if e.versions],
            "model_versions_loaded": sum(len(e.versions) for e in models),
            "preprocessor_loaded": ready,
            "timestamp": datetime.now(UTC).isoformat(),
        }
    )


@router.get("/health/live", summary="Liveness: the process answers")
async def live() -> Response:
    return ORJSONResponse({"status": "alive"})


@router.get("/health/ready", summary="Readiness: models are loaded (503 until then)")
async def ready(state: StateDep) -> Response:
    if state.ready:
        return ORJSONResponse({"status": "ready"})
    reason = state.load_error or "models are still loading"
    return error_response(
        503, "not_ready", reason, {"status": "not_ready"}, headers={"Retry-After": "1"}
    )
