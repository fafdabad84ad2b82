"""Administration of users (scope `admin`)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.responses import Response

from mlgate.api.admin_schemas import UserCreate, UserOut, UserUpdate
from mlgate.api.deps import AccountsDep, RequireAdmin
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.auth.accounts import UNSET
from mlgate.auth.views import user_view
from mlgate.db.models import MAX_ROW_ID

router = APIRouter(
    prefix="/v1/admin/users",
    tags=["admin"],
    dependencies=[RequireAdmin],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


@router.post("", summary="Create a user", status_code=201, response_model=UserOut)
async def create_user(body: UserCreate, accounts: AccountsDep) -> Response:
    """409 if the username is taken, 422 for unknown scopes or tiers."""
    user = await accounts.create_user(
        body.username,
        password=body.password,
        scopes=body.scopes,
        tier=body.tier,
        disabled=body.disabled,
        rate_limit_overrides=body.rate_limit_overrides,
        tenant=body.tenant,
    )
    return ORJSONResponse(user_view(user), status_code=201)


@router.get("", summary="List users", response_model=list[UserOut])
async def list_users(
    accounts: AccountsDep,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=MAX_ROW_ID),
) -> Response:
    users = await accounts.list_users(limit=limit, offset=offset)
    return ORJSONResponse([user_view(u) for u in users])


@router.get("/{user_id}", summary="One user", response_model=UserOut)
async def get_user(user_id: int, accounts: AccountsDep) -> Response:
    return ORJSONResponse(user_view(await accounts.get_user(user_id)))


@router.patch(
    "/{user_id}", summary="Change tier, scopes, password or disable", response_model=UserOut
)
async def update_user(user_id: int, body: UserUpdate, accounts: AccountsDep) -> Response:
    """Disabling a user refuses their tokens and keys at once (403); a new password
    refuses the access tokens issued before it (401)."""
    sent = body.model_fields_set
    user = await accounts.update_user(
        user_id,
        tier=body.tier,
        scopes=body.scopes,
        disabled=body.disabled,
        password=body.password,
        rate_limit_overrides=body.rate_limit_overrides if "rate_limit_overrides" in sent else UNSET,
        tenant=body.tenant if "tenant" in sent else UNSET,
    )
    return ORJSONResponse(user_view(user))


@router.post(
    "/{user_id}/revoke-sessions",
    summary="Refuse every access token issued to the user so far",
    response_model=UserOut,
)
async def revoke_sessions(user_id: int, accounts: AccountsDep) -> Response:
    """At once, on every worker; the user can log in again, and API keys keep working
    (revoke those one by one). A password change does the same."""
    return ORJSONResponse(user_view(await accounts.revoke_sessions(user_id)))
