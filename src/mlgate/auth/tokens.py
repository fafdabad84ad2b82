"""JWT access tokens: issued by ``POST /v1/token``, verified on every request, no state.

One algorithm is accepted, the configured one: a token whose header names another
(``none``, or HS256 signed with a public key in an algorithm-confusion attack) is
refused before its signature is looked at. Issuer, audience, expiry and the presence
of every claim are checked, with a small leeway for clock skew.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from mlgate.auth.scopes import format_scopes, parse_scopes
from mlgate.auth.signing import SigningKeys
from mlgate.errors import Unauthorized
from mlgate.settings import AuthSettings

REQUIRED_CLAIMS = ["sub", "uid", "scope", "tier", "exp", "iat", "jti", "iss", "aud"]

_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidAudienceError, "token was issued for another audience"),
    (jwt.InvalidIssuerError, "token was issued by another issuer"),
    (jwt.InvalidAlgorithmError, "token algorithm is not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified content of an access token."""

    username: str
    user_id: int
    scopes: frozenset[str]
    tier: str
    jti: str
    expires_at: int
    epoch: int = 0
    """The user's token epoch when it was issued (0 in tokens from before epochs)."""
    tenant: str | None = None


class TokenCodec:
    """Signs and verifies access tokens with the configured algorithm and keys."""

    def __init__(self, settings: AuthSettings, keys: SigningKeys) -> None:
        self._settings = settings
        self._keys = keys

    def issue(
        self,
        *,
        username: str,
        user_id: int,
        scopes: frozenset[str],
        tier: str,
        epoch: int = 0,
        tenant: str | None = None,
    ) -> IssuedToken:
        """A signed token for a user who just proved their password.

        ``epoch`` is the user's token epoch now: a password change or "revoke sessions"
        raises it, which refuses this token (where tokens are checked against the user).
        """
        now = int(time.time())
        ttl = self._settings.access_token_ttl_s
        scope = format_scopes(scopes)
        claims = {
            "sub": username,
            "uid": user_id,
            "scope": scope,
            "tier": tier,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "ep": epoch,
        }
        if tenant is not None:
            claims["tnt"] = tenant
        token = jwt.encode(
            claims, self._keys.signing_key, algorithm=self._keys.algorithm, headers={"typ": "JWT"}
        )
        return IssuedToken(access_token=token, expires_in=ttl, scope=scope)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; anything else is 401 with the reason."""
        try:
            claims = jwt.decode(
                token,
                self._keys.verification_key,
                algorithms=[self._keys.algorithm],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=self._settings.jwt_leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_reason(exc), invalid_token=True) from None
        return _typed_claims(claims)


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "token is malformed"


def _typed_claims(claims: dict[str, Any]) -> TokenClaims:
    sub, uid, scope, tier, jti = (claims.get(k) for k in ("sub", "uid", "scope", "tier", "jti"))
    # Optional: tokens issued before epochs and tenants existed lack them.
    epoch, tenant = claims.get("ep", 0), claims.get("tnt")
    if not (
        isinstance(sub, str)
        and isinstance(uid, int)
        and isinstance(scope, str)
        and isinstance(tier, str)
        and isinstance(jti, str)
        and type(epoch) is int
        and (tenant is None or isinstance(tenant, str))
    ):
        raise Unauthorized("token claims have the wrong types", invalid_token=True)
    return TokenClaims(
        username=sub,
        user_id=uid,
        scopes=parse_scopes(scope),
        tier=tier,
        jti=jti,
        expires_at=int(claims["exp"]),
        epoch=epoch,
        tenant=tenant,
    )
