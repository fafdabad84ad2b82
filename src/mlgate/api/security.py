"""Resolving the caller of a request, and the scope checks routes declare.

Both security schemes are declared (OAuth2 password flow and ``X-API-Key``) so that
the /docs "Authorize" dialog offers both; neither errors by itself, because the
:class:`~mlgate.auth.service.AuthService` decides (anonymous access, which credential
wins, and the one 401 envelope).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from mlgate.api.limits import EdgeLimits, request_client_key
from mlgate.api.schemas import OipError, error_responses
from mlgate.auth.principal import Principal
from mlgate.auth.scopes import SCOPES
from mlgate.auth.service import AuthService
from mlgate.context import principal_var
from mlgate.errors import Forbidden, Unauthorized
from mlgate.observability.tracing import step

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/v1/token",
    scopes=SCOPES,
    auto_error=False,
    description="Log in with a username and password (OAuth2 password flow). "
    "An API key also works as a bearer token.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key (`mlg_...`), from `mlgate keys create` or the admin API.",
)


_AUTH_ERRORS = {
    401: "No, invalid, expired or revoked credentials",
    403: "Missing scope, or the user is disabled",
    429: "A rate limit of the caller's tier, or too many failed authentications from this address",
}
#: What any authenticated route may answer besides its own responses.
AUTH_ERROR_RESPONSES = error_responses(_AUTH_ERRORS)
#: The same on /v2, in the Open Inference Protocol's error shape.
OIP_AUTH_ERROR_RESPONSES = error_responses(_AUTH_ERRORS, OipError)


def credentials(request: Request) -> tuple[str | None, str | None]:
    """(bearer token, API key) as the two security schemes read them."""
    headers = request.headers
    bearer = None
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, param = authorization.partition(" ")
        if scheme.lower() == "bearer":
            bearer = param
    return bearer, headers.get("x-api-key") or None


async def get_principal(
    request: Request,
    bearer: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller of this request, also left on ``request.state.principal`` (the schemes'
    parameters are declared for the OpenAPI document; :func:`authenticate` reads the
    same headers)."""
    return await authenticate(request)


async def authenticate(request: Request) -> Principal:
    """The caller of this request, also left on ``request.state.principal`` and in the
    request context (once per request)."""
    # Two guards on one route would authenticate twice; the request state makes it once.
    resolved = getattr(request.state, "principal", None)
    if isinstance(resolved, Principal):
        return resolved
    bearer, api_key = credentials(request)
    headers = request.headers
    if not (bearer or api_key) and ("authorization" in headers or "x-api-key" in headers):
        # Never silently anonymous: a client that sent credentials must learn they are wrong.
        raise Unauthorized(
            "empty credentials or an unsupported Authorization scheme: use Bearer",
            invalid_token=True,
        )
    state = request.app.state.mlgate
    auth: AuthService = state.auth
    limits: EdgeLimits = state.limits
    try:
        with step(state.tracer, "mlgate.authenticate"):
            principal = await auth.authenticate(
                api_key=api_key, bearer=bearer, client_ip=request_client_key(request)
            )
    except Unauthorized:
        # 429 instead of this 401 once the address has failed too often; a valid
        # credential never gets here, whatever its address did (see EdgeLimits).
        await limits.record_failed_auth(request)
        raise
    request.state.principal = principal
    principal_var.set(principal)
    return principal


def authorize(principal: Principal, scope: str) -> None:
    """403 unless ``principal`` holds ``scope``."""
    if not principal.has(scope):
        raise Forbidden(
            f"this needs the {scope!r} scope",
            details={"required_scope": scope, "scopes": sorted(principal.scopes)},
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )


def require_scope(scope: str, *, charge: bool = True) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through principals holding ``scope`` (403 otherwise) and
    charges the request to the caller's request allowance (429 when over).

    ``charge=False`` leaves the charge to the inference route: the data plane charges the
    request together with its rows in one limiter call once the input has decoded
    (:func:`mlgate.api.inference.charging`, which also charges requests that fail first).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(
        request: Request, principal: Annotated[Principal, Security(get_principal)]
    ) -> Principal:
        authorize(principal, scope)
        # Charged once the caller is known to be allowed here, once per request.
        if charge and not getattr(request.state, "rate_charged", False):
            request.state.rate_charged = True
            limits: EdgeLimits = request.app.state.mlgate.limits
            await limits.charge_request(request, principal)
        return principal

    check.__name__ = f"require_{scope.replace(':', '_')}" + ("" if charge else "_uncharged")
    return check
