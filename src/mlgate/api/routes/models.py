"""v1 model listing and model information."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from mlgate.api.deps import RegistryDep, RequireModelsRead
from mlgate.api.presenters import model_view, version_view
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    dependencies=[RequireModelsRead],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


@router.get("", summary="List served models", response_model=None)
async def list_models(registry: RegistryDep) -> Response:
    return ORJSONResponse(
        {
            "default_model": registry.default_model,
            "models": [model_view(entry) for entry in registry.models()],
        }
    )


@router.get(
    "/{model}", summary="One model: versions, aliases, schema, metrics", response_model=None
)
async def get_model(model: str, registry: RegistryDep) -> Response:
    return ORJSONResponse(model_view(registry.entry(model), full=True))


@router.get("/{model}/versions/{version}", summary="One version of a model", response_model=None)
async def get_version(model: str, version: str, registry: RegistryDep) -> Response:
    mv = registry.resolve(model, version)
    return ORJSONResponse({"name": mv.name, **version_view(mv)})
