"""Health, liveness and readiness probes (always open); the detailed health (admin)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

import mlgate
from mlgate.api.deps import RequireAdmin, StateDep
from mlgate.api.errors import error_response
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES, error_responses
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.api.state import AppState
from mlgate.db.engine import sqlite_path
from mlgate.db.readiness import PROBLEMS as DATABASE_PROBLEMS
from mlgate.db.readiness import SERVING as DATABASE_SERVING
from mlgate.db.readiness import database_status
from mlgate.observability.health import detailed_health
from mlgate.registry.paths import hide_paths

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
@router.get("/", summary="Liveness, where KServe's v1 protocol asks for it")
async def live() -> Response:
    return ORJSONResponse({"status": "alive"})


@router.get(
    "/health/detailed",
    summary="Every dependency and resource of this worker, with status and latency (admin)",
    dependencies=[RequireAdmin],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)
async def detailed(state: StateDep) -> Response:
    """Database, Redis, models, audit queue, batchers and resources (RSS, open files,
    event-loop lag) of the worker that answers; each with a status and its latency."""
    return ORJSONResponse(await detailed_health(state))


@router.get(
    "/health/ready",
    summary="Readiness: models loaded, database writable, rate limiter up",
    responses=error_responses({503: "Not ready: `details.checks` names the failing check"}),
)
async def ready(request: Request, state: StateDep) -> Response:
    """200 when this worker can serve predictions; 503 (with the failing check named)
    while models load, when the database cannot be written (missing SQLite file,
    read-only, down), or when Redis is down and rate limits fail closed. A fail-open
    limiter without Redis reports ``degraded``."""
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
    database = await database_status(state.engine, sqlite_path(state.settings.database_url))
    checks["database"] = database
    limiter_ok = await state.limiter.check()
    fail_open = state.settings.rate_limit.fail_open
    checks["rate_limiter"] = "ok" if limiter_ok else ("degraded" if fail_open else "down")
    # Informational: predictions are served while audit rows wait to be written.
    audit_log = state.audit.log if state.audit is not None else None
    checks["audit_log"] = audit_log.status if audit_log is not None else "off"
    problems = []
    if not state.ready:
        # Readiness is open to anyone: the reason names no server path.
        problems.append(hide_paths(state.load_error or "models are still loading"))
    if database not in DATABASE_SERVING:
        problems.append(DATABASE_PROBLEMS[database])
    if checks["rate_limiter"] == "down":
        problems.append("the rate limiter's Redis does not answer (fail-closed)")
    return checks, problems
