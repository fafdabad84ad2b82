"""Logging in (OAuth2 password flow) and asking who you are."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel
from starlette.responses import Response

from mlgate.api.deps import AccountsDep, AuthDep, PrincipalDep
from mlgate.api.limits import EdgeLimits
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.auth.views import principal_view, user_view
from mlgate.devices.owners import device_owner
from mlgate.errors import Unauthorized

router = APIRouter(tags=["auth"], responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES})


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


class Me(BaseModel):
    kind: str
    subject: str
    user_id: int | None
    key_id: int | None
    scopes: list[str]
    tier: str
    tenant: str | None
    rate_limit_overrides: dict[str, Any]
    key_rate_limit_overrides: dict[str, Any] | None
    device_owner: str | None
    """Whose devices a device_id names for this caller (None: anonymous, no devices)."""
    user: dict[str, Any] | None


@router.post(
    "/v1/token",
    summary="Exchange a username and password for an access token",
    response_model=TokenResponse,
)
async def issue_token(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], auth: AuthDep
) -> Response:
    """The OAuth2 password grant (form fields `username`, `password`, optional `scope` to
    ask for fewer scopes). 401 for a wrong username or password, 403 for a disabled user;
    429 for too many attempts from one address, or while the username backs off after
    wrong passwords."""
    limits: EdgeLimits = request.app.state.mlgate.limits
    await limits.charge_login(request, form.username)
    try:
        issued = await auth.login(form.username, form.password, " ".join(form.scopes))
    except Unauthorized:
        await limits.record_failed_login(request, form.username)
        raise
    return ORJSONResponse(
        {
            "access_token": issued.access_token,
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        },
        # RFC 6749 §5.1: responses carrying tokens must not be cached.
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@router.get("/v1/users/me", summary="The caller: user, key, scopes and tier", response_model=Me)
async def me(principal: PrincipalDep, accounts: AccountsDep) -> Response:
    user = await accounts.get_user(principal.user_id) if principal.user_id is not None else None
    return ORJSONResponse(
        {
            **principal_view(principal),
            "device_owner": None if principal.kind == "anonymous" else device_owner(principal),
            "user": user_view(user) if user is not None else None,
        }
    )
