"""Who is calling: the result of authentication, read by routes, the rate limiter and audit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from mlgate.auth.scopes import grants

PrincipalKind = Literal["user", "api_key", "anonymous"]

_NO_OVERRIDES: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller (or an anonymous one, identified by its IP address).

    Stored on ``request.state.principal``. Rate limits belong to the account: a user and
    all of that user's keys and tokens share the limits of the user's ``tier``, with
    ``rate_limit_overrides`` (set per user by an admin, opaque to auth) replacing the
    tier's values. A key may add ``key_rate_limit_overrides``: an extra cap for that key
    alone, inside its account's limits.
    """

    kind: PrincipalKind
    subject: str
    """Username for users and their keys, the client address (or IPv6 network) for
    anonymous callers."""
    scopes: frozenset[str]
    tier: str
    """The account's tier: the user's (also when calling with one of the user's keys)."""
    user_id: int | None = None
    key_id: int | None = None
    rate_limit_overrides: Mapping[str, Any] = field(default_factory=lambda: _NO_OVERRIDES)
    """The account's overrides (the user's)."""
    key_rate_limit_overrides: Mapping[str, Any] | None = None
    """The key's own cap (over the account's limits), None when the key has none."""
    tenant: str | None = None
    """The admin-defined group of the user, whose members share device baselines."""

    def has(self, scope: str) -> bool:
        """Whether this principal may use ``scope`` (``admin`` implies all)."""
        return grants(self.scopes, scope)

    @property
    def rate_limit_key(self) -> str:
        """The account to count requests against: ``user:7`` for a user and all of that
        user's keys and tokens, ``ip:10.0.0.7`` for an anonymous caller."""
        if self.kind == "anonymous":
            return f"ip:{self.subject}"
        return f"user:{self.user_id}"

    @property
    def log_id(self) -> str:
        """Who this is in logs and audit records: ``user:7``, ``key:12`` or ``anonymous``
        (never a secret; anonymous callers' addresses are logged as the client IP)."""
        if self.kind == "anonymous":
            return "anonymous"
        if self.kind == "api_key":
            return f"key:{self.key_id}"
        return f"user:{self.user_id}"

    @property
    def key_cap_key(self) -> str | None:
        """The bucket of the key's own cap (``key:12``), None without one."""
        if self.key_id is None or self.key_rate_limit_overrides is None:
            return None
        return f"key:{self.key_id}"


def frozen_overrides(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of rate-limit overrides (empty when None)."""
    return MappingProxyType(dict(value)) if value else _NO_OVERRIDES
