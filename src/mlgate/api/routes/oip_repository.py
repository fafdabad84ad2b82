"""The Open Inference Protocol's model repository extension (admin scope).

``POST /v2/repository/index`` lists every model version and its state;
``.../models/{m}/load`` serves a model again and reloads it from disk;
``.../models/{m}/unload`` stops serving it (requests in flight finish). Like the admin
reload, these act on the worker that serves the request; with several workers, a
repository watch (``MLGATE_MODELS__WATCH_INTERVAL_S``) keeps loaded models in step.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate.api.body import read_json
from mlgate.api.deps import RegistryDep, RequireAdmin
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import OIP_ERROR_RESPONSES
from mlgate.api.security import OIP_AUTH_ERROR_RESPONSES
from mlgate.dataplane.validation import fail
from mlgate.errors import ServiceUnavailable
from mlgate.registry.manifest import ManifestError
from mlgate.registry.registry import version_sort_key

router = APIRouter(
    prefix="/v2/repository",
    tags=["open-inference-protocol"],
    dependencies=[RequireAdmin],
    responses={**OIP_AUTH_ERROR_RESPONSES, **OIP_ERROR_RESPONSES},
)


async def _optional_json(request: Request) -> dict[str, Any]:
    if not (await request.body()).strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise fail("body", "expected an object")
    return body


@router.post("/index", summary="Model versions and their state")
async def index(request: Request, registry: RegistryDep) -> Response:
    body = await _optional_json(request)
    ready_only = body.get("ready") is True
    rows: list[dict[str, Any]] = []
    for entry in registry.models():
        for version in sorted(entry.versions, key=version_sort_key):
            rows.append({"name": entry.name, "version": version, "state": "READY", "reason": ""})
        if ready_only:
            continue
        for version, reason in sorted(entry.errors.items()):
            if version not in entry.versions:
                rows.append(
                    {
                        "name": entry.name,
                        "version": version,
                        "state": "UNAVAILABLE",
                        "reason": reason,
                    }
                )
    if not ready_only:
        for name in sorted(registry.unloaded):
            rows.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
    return ORJSONResponse(rows)


@router.post("/models/{model}/load", summary="Serve a model (again), reloading it from disk")
async def load(model: str, request: Request, registry: RegistryDep) -> Response:
    await _optional_json(request)
    try:
        await anyio.to_thread.run_sync(registry.load, model)
    except ManifestError as exc:
        raise ServiceUnavailable(f"load failed: {exc}") from None
    return ORJSONResponse({})


@router.post("/models/{model}/unload", summary="Stop serving a model")
async def unload(model: str, request: Request, registry: RegistryDep) -> Response:
    await _optional_json(request)
    await anyio.to_thread.run_sync(registry.unload, model)
    return ORJSONResponse({})
