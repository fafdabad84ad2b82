"""Usage: requests, rows, errors and rate-limit refusals per principal, tier, model and
UTC day. `GET /v1/usage`: the caller's user (all its keys; scope `predict`);
`GET /v1/admin/usage`: everyone (scope `admin`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from mlgate.api.deps import AuditDep, PrincipalDep, RequireAdmin, RequirePredict
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.audit.service import AuditService
from mlgate.audit.unavailable import database_required
from mlgate.audit.usage import UsageQuery, read_usage
from mlgate.errors import Forbidden

router = APIRouter(tags=["usage"], responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES})

Since = Annotated[date | None, Query(description="First UTC day (YYYY-MM-DD), inclusive.")]
Until = Annotated[date | None, Query(description="Last UTC day, inclusive.")]


async def _read(audit: AuditService, query: UsageQuery) -> Response:
    # This worker's counts first, so that callers see their own latest requests.
    with database_required():
        await audit.usage.flush()
        return ORJSONResponse(await read_usage(audit.engine, query))


@router.get(
    "/v1/usage",
    summary="The caller's usage (their user and all its keys)",
    response_model=None,
    dependencies=[RequirePredict],
)
async def own_usage(
    principal: PrincipalDep,
    audit: AuditDep,
    model: str | None = None,
    since: Since = None,
    until: Until = None,
) -> Response:
    if principal.user_id is None:
        raise Forbidden("anonymous callers have no usage record: authenticate")
    return await _read(
        audit, UsageQuery(user_id=principal.user_id, model=model, since=since, until=until)
    )


@router.get(
    "/v1/admin/usage",
    summary="Everyone's usage",
    response_model=None,
    dependencies=[RequireAdmin],
)
async def all_usage(
    audit: AuditDep,
    user_id: int | None = None,
    principal: Annotated[str | None, Query(description="`user:7`, `key:12`, `anonymous`")] = None,
    tier: str | None = None,
    model: str | None = None,
    since: Since = None,
    until: Until = None,
) -> Response:
    query = UsageQuery(
        user_id=user_id, principal=principal, tier=tier, model=model, since=since, until=until
    )
    return await _read(audit, query)
