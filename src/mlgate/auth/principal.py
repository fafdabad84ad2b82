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

    Stored on ``request.state.principal``. The rate limiter keys on ``kind`` and
    ``subject`` and picks limits by ``tier``, letting ``rate_limit_overrides`` (set per
    user or key by an admin, opaque to auth) replace the tier's values.
    """

    kind: PrincipalKind
    subject: str
    """Username for users and their keys, the client IP for anonymous callers."""
    scopes: frozenset[str]
    tier: str
    user_id: int | None = None
    key_id: int | None = None
    rate_limit_overrides: Mapping[str, Any] = field(default_factory=lambda: _NO_OVERRIDES)

    def has(self, scope: str) -> bool:
        """Whether this principal may use ``scope`` (``admin`` implies all)."""
        return grants(self.scopes, scope)

    @property
    def rate_limit_key(self) -> str:
        """A stable identity to count requests against: ``user:7``, ``key:12``, ``ip:10.0.0.7``."""
        if self.kind == "anonymous":
            return f"ip:{self.subject}"
        if self.kind == "api_key":
            return f"key:{self.key_id}"
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


def frozen_overrides(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of rate-limit overrides (empty when None)."""
    return MappingProxyType(dict(value)) if value else _NO_OVERRIDES
