"""Live quality of a model from its labelled predictions (scope `models:read`)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from mlgate.api.deps import AuditDep, RegistryDep, RequireModelsRead
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.audit.keys import key_floor
from mlgate.audit.quality import model_quality
from mlgate.audit.unavailable import database_required
from mlgate.errors import ModelNotFound, NotFound, ValidationFailed, VersionNotFound

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    dependencies=[RequireModelsRead],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)

_WINDOW = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_window(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or plain seconds, as seconds."""
    match = _WINDOW.match(text.strip())
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ValidationFailed(
            f"window must be a positive duration like 30m, 24h or 7d, got {text[:32]!r}",
            details=[{"field": "window", "message": "a duration: <number>[s|m|h|d|w]"}],
        )
    return seconds


@router.get(
    "/{model}/quality",
    summary="Accuracy, F1, confusion matrix from feedback; estimated accuracy without it",
    response_model=None,
)
async def quality(
    model: str,
    registry: RegistryDep,
    audit: AuditDep,
    version: Annotated[
        str | None, Query(description="One version or alias (default: every version).")
    ] = None,
    window: Annotated[
        str | None,
        Query(description="Predictions of the last 30m, 24h, 7d, ... (default: all kept)."),
    ] = None,
) -> Response:
    if audit.log is None:
        raise NotFound("the prediction audit log is off on this server (MLGATE_AUDIT__ENABLED)")
    try:
        entry = registry.entry(model)
    except ModelNotFound:
        entry = None
    task: str | None = None
    if entry is not None and entry.versions:
        task = next(iter(entry.versions.values())).manifest.task
    task = task or audit.catalog.task_of(model)
    if task is None:
        raise ModelNotFound(f"model {model!r} is not served", details={"model": model})
    resolved = version
    if version is not None and entry is not None:
        try:
            resolved = registry.resolve(model, version).version
        except VersionNotFound:
            if audit.catalog.facts(model, version) is None:
                raise
    now = time.time()
    since = now - parse_window(window) if window is not None else None
    with database_required():
        if audit.log.depth:
            await audit.log.flush()
        report = await model_quality(
            audit.engine,
            audit.catalog,
            model,
            task=task,
            version=resolved,
            since_key=key_floor(since) if since is not None else None,
        )
    return ORJSONResponse(
        {
            "model": model,
            "task": task,
            "version": resolved,
            "window": {
                "from": datetime.fromtimestamp(since, UTC).isoformat() if since else None,
                "to": datetime.fromtimestamp(now, UTC).isoformat(),
            },
            **report,
        }
    )
