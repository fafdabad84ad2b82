"""Administration: reloading the model repository."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from mlgate.api.deps import RequireAdmin, StateDep
from mlgate.api.lifespan import reload_repository
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
async def reload_models(state: StateDep) -> Response:
    """Loads new and changed versions; in-flight requests finish on the versions they
    resolved. A version that fails to load is reported and the previous one keeps serving."""
    try:
        report = await reload_repository(state)
    except ManifestError as exc:
        raise ServiceUnavailable(f"reload failed: {exc}") from None
    return ORJSONResponse(report.as_dict())
