"""Health, liveness and readiness probes (always open)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import Response

import mlgate
from mlgate.api.deps import StateDep
from mlgate.api.errors import error_response
from mlgate.api.responses import ORJSONResponse
from mlgate.api.state import AppState

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


@router.get("/health/ready", summary="Readiness: models loaded, database and rate limiter up")
async def ready(request: Request, state: StateDep) -> Response:
    """200 when this worker can serve predictions; 503 (with the failing check named)
    while models load, when the database does not answer, or when Redis is down and
    rate limits fail closed. A fail-open limiter without Redis reports ``degraded``."""
    checks, problems = await readiness(state)
    if problems:
        return error_response(
            request,
            503,
            "not_ready",
            "; ".join(problems),
            {"status": "not_ready", "checks": checks},
            headers={"Retry-After": "1"},
        )
    return ORJSONResponse({"status": "ready", "checks": checks})


async def readiness(state: AppState) -> tuple[dict[str, str], list[str]]:
    """Each check's status, and what keeps this worker from serving (empty: ready)."""
    checks: dict[str, str] = {"models": "ok" if state.ready else "loading"}
    checks["database"] = "ok" if await _database_answers(state) else "down"
    limiter_ok = await state.limiter.check()
    fail_open = state.settings.rate_limit.fail_open
    checks["rate_limiter"] = "ok" if limiter_ok else ("degraded" if fail_open else "down")
    # Informational: predictions are served while audit rows wait to be written.
    audit_log = state.audit.log if state.audit is not None else None
    checks["audit_log"] = audit_log.status if audit_log is not None else "off"
    problems = []
    if not state.ready:
        problems.append(state.load_error or "models are still loading")
    if checks["database"] != "ok":
        problems.append("the database does not answer")
    if checks["rate_limiter"] == "down":
        problems.append("the rate limiter's Redis does not answer (fail-closed)")
    return checks, problems


async def _database_answers(state: AppState, timeout_s: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s), state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
