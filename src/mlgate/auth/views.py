"""Users and keys as JSON-ready dicts, for the admin API and the CLI (never a secret)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlgate.auth.principal import Principal
from mlgate.db.models import ApiKey, User


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "disabled": user.disabled,
        "tier": user.tier,
        "scopes": list(user.scopes),
        "has_password": user.password_hash is not None,
        "rate_limit_overrides": user.rate_limit_overrides,
        "tenant": user.tenant,
        "created_at": _iso(user.created_at),
        "updated_at": _iso(user.updated_at),
    }


def key_status(key: ApiKey, now: datetime | None = None) -> str:
    """active, expired or revoked."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


def key_view(key: ApiKey, username: str) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "user_id": key.user_id,
        "username": username,
        "scopes": list(key.scopes),
        "tier": key.tier,
        "status": key_status(key),
        "rate_limit_overrides": key.rate_limit_overrides,
        "created_at": _iso(key.created_at),
        "expires_at": _iso(key.expires_at),
        "last_used_at": _iso(key.last_used_at),
        "revoked_at": _iso(key.revoked_at),
    }


def principal_view(principal: Principal) -> dict[str, Any]:
    return {
        "kind": principal.kind,
        "subject": principal.subject,
        "user_id": principal.user_id,
        "key_id": principal.key_id,
        "scopes": sorted(principal.scopes),
        "tier": principal.tier,
        "tenant": principal.tenant,
        "rate_limit_overrides": dict(principal.rate_limit_overrides),
        "key_rate_limit_overrides": (
            None
            if principal.key_rate_limit_overrides is None
            else dict(principal.key_rate_limit_overrides)
        ),
    }
