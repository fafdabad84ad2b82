"""Administration: reloading the model repository."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from starlette.responses import Response

from mlgate.api.deps import RegistryDep, RequireAdmin
from mlgate.api.responses import ORJSONResponse
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.errors import ServiceUnavailable
from mlgate.registry.manifest import ManifestError

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[RequireAdmin],
    responses=AUTH_ERROR_RESPONSES,
)


@router.post("/models/reload", summary="Rescan the model repository and swap versions")
async def reload_models(registry: RegistryDep) -> Response:
    """Loads new and changed versions; in-flight requests finish on the versions they
    resolved. A version that fails to load is reported and the previous one keeps serving."""
    try:
        report = await anyio.to_thread.run_sync(registry.reload)
    except ManifestError as exc:
        raise ServiceUnavailable(f"reload failed: {exc}") from None
    return ORJSONResponse(report.as_dict())
