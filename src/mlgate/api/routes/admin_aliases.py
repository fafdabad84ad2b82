"""Administration: moving a model's aliases (``stable``, ``shadow``, ...) for every worker,
and the per-worker counters of the cache, drift, shadow and detection sinks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mlgate.aliases.store import check_alias
from mlgate.api.deps import RegistryDep, RequireAdmin, StateDep
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.auth.principal import Principal
from mlgate.errors import ValidationFailed
from mlgate.registry.registry import version_sort_key

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[RequireAdmin],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


class AliasMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(examples=["stable"])
    version: str = Field(min_length=1, max_length=64, examples=["2"])
    """A version loaded in this worker."""


def _aliases_view(state: StateDep, model: str) -> dict[str, str]:
    return dict(state.registry.entry(model).aliases)


@router.post(
    "/models/{model}/aliases",
    summary="Move an alias (stable, shadow, ...) to a version, for every worker",
    response_model=None,
)
async def move_alias(model: str, body: AliasMove, request: Request, state: StateDep) -> Response:
    """Stored in the database and recorded (who, when, from, to); this worker applies it
    at once, the others within `MLGATE_ALIASES__POLL_INTERVAL_S`. It wins over
    model.yaml until removed; `latest` is computed and cannot be moved."""
    alias = check_alias(body.alias)
    entry = state.registry.entry(model)
    if body.version not in entry.versions:
        raise ValidationFailed(
            f"model {model!r} has no loaded version {body.version!r}",
            details=[
                {
                    "field": "version",
                    "message": "not a loaded version",
                    "available_versions": sorted(entry.versions, key=version_sort_key),
                }
            ],
        )
    principal: Principal = request.state.principal
    signals = state.signals
    move = await signals.aliases.move(
        model, alias, body.version, entry.aliases.get(alias), principal
    )
    await signals.alias_sync.apply()
    return ORJSONResponse({**move, "aliases": _aliases_view(state, model)})


@router.delete(
    "/models/{model}/aliases/{alias}",
    summary="Remove a moved alias (model.yaml applies again)",
    response_model=None,
)
async def remove_alias(model: str, alias: str, request: Request, state: StateDep) -> Response:
    alias = check_alias(alias)
    entry = state.registry.entry(model)
    signals = state.signals
    move = await signals.aliases.move(
        model, alias, None, entry.aliases.get(alias), request.state.principal
    )
    await signals.alias_sync.apply()
    return ORJSONResponse({**move, "aliases": _aliases_view(state, model)})


@router.get(
    "/models/{model}/aliases",
    summary="A model's aliases, the moved ones and the record of moves",
    response_model=None,
)
async def list_aliases(model: str, state: StateDep, registry: RegistryDep) -> Response:
    entry = registry.entry(model)
    signals = state.signals
    overrides = (await signals.aliases.overrides()).get(model, {})
    return ORJSONResponse(
        {
            "model": model,
            "aliases": dict(entry.aliases),
            "moved": overrides,
            "declared": dict(entry.options.aliases),
            "history": await signals.aliases.history(model),
        }
    )


@router.get(
    "/signals",
    summary="This worker's counters: cache, drift, shadow, detection sinks",
    response_model=None,
)
async def signals_stats(state: StateDep) -> Response:
    return ORJSONResponse(state.signals.stats())
