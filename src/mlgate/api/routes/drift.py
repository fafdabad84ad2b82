"""Input drift of a model version against its training reference."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query
from starlette.responses import Response

from mlgate.api.deps import RegistryDep, RequireModelsRead, StateDep
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.drift.report import drift_report, parse_window

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    dependencies=[RequireModelsRead],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


@router.get(
    "/{model}/drift",
    summary="Input drift per feature (Jensen-Shannon distance, PSI) and the predicted mix",
    response_model=None,
)
async def get_drift(
    model: str,
    state: StateDep,
    registry: RegistryDep,
    version: str | None = Query(default=None, description="Version or alias; default: stable"),
    window: str | None = Query(
        default=None, description="How far back: 3600, 90m, 24h, 7d (default 24h)"
    ),
) -> Response:
    """Counts flushed by every worker over the window (each worker flushes every
    `MLGATE_DRIFT__FLUSH_INTERVAL_S`)."""
    mv = registry.resolve(model, version)
    settings = state.settings.drift
    window_s = parse_window(window, settings.default_window_s)
    drift = state.signals.drift
    if drift is not None:
        await drift.flush()  # this worker's latest rows count too
    report = await drift_report(mv, state.signals.drift_store, settings, window_s, time.time())
    return ORJSONResponse(report)
