"""Administration of API keys (scope `admin`); a key is shown once, when created."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from mlgate.api.admin_schemas import KeyCreate, KeyCreated, KeyOut, KeyUpdate
from mlgate.api.deps import AccountsDep, RequireAdmin
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.auth.accounts import UNSET
from mlgate.auth.views import key_view
from mlgate.errors import ValidationFailed

router = APIRouter(
    prefix="/v1/admin/api-keys",
    tags=["admin"],
    dependencies=[RequireAdmin],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


@router.post(
    "", summary="Create an API key (shown once)", status_code=201, response_model=KeyCreated
)
async def create_key(body: KeyCreate, accounts: AccountsDep) -> Response:
    if (body.user_id is None) == (body.username is None):
        raise ValidationFailed(
            "give the owner as user_id or username (one of them)",
            details=[{"field": "user_id", "message": "user_id or username required"}],
        )
    user_id = body.user_id
    if user_id is None:
        assert body.username is not None
        user_id = (await accounts.find_user(body.username)).id
    created = await accounts.create_key(
        user_id,
        name=body.name,
        scopes=body.scopes,
        tier=body.tier,
        expires_at=body.expires_at,
        rate_limit_overrides=body.rate_limit_overrides,
    )
    return ORJSONResponse(
        {**key_view(created.key, created.username), "key": created.plaintext},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.get("", summary="List API keys", response_model=list[KeyOut])
async def list_keys(accounts: AccountsDep, user_id: int | None = None) -> Response:
    keys = await accounts.list_keys(user_id=user_id)
    return ORJSONResponse([key_view(key, username) for key, username in keys])


@router.get("/{key_id}", summary="One API key", response_model=KeyOut)
async def get_key(key_id: int, accounts: AccountsDep) -> Response:
    return ORJSONResponse(key_view(*await accounts.get_key(key_id)))


@router.patch("/{key_id}", summary="Rename, rescope, change tier or expiry", response_model=KeyOut)
async def update_key(key_id: int, body: KeyUpdate, accounts: AccountsDep) -> Response:
    sent = body.model_fields_set
    key, username = await accounts.update_key(
        key_id,
        name=body.name,
        scopes=body.scopes,
        tier=body.tier,
        expires_at=body.expires_at if "expires_at" in sent else UNSET,
        rate_limit_overrides=body.rate_limit_overrides if "rate_limit_overrides" in sent else UNSET,
    )
    return ORJSONResponse(key_view(key, username))


@router.delete(
    "/{key_id}", summary="Revoke an API key (at once, on every worker)", response_model=KeyOut
)
async def revoke_key(key_id: int, accounts: AccountsDep) -> Response:
    """The key stays listed as revoked; revoking twice changes nothing."""
    return ORJSONResponse(key_view(*await accounts.revoke_key(key_id)))
