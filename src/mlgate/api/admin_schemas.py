"""Bodies of the admin API for users and API keys (validated by FastAPI: low volume)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from mlgate.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

Password = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
# Opaque to auth: the rate limiter gives them meaning (e.g. {"requests_per_minute": 500}).
Overrides = dict[str, int | float]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        min_length=1,
        max_length=64,
        description="Case-insensitive (stored in lower case)",
        json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$"},
    )
    password: str | None = Password
    """None: the user cannot log in with a password, only with API keys."""
    scopes: list[str] = Field(default_factory=list)
    tier: str | None = None
    disabled: bool = False
    rate_limit_overrides: Overrides | None = None
    tenant: str | None = None
    """An admin-defined group whose members share device baselines; None: the user alone."""


class UserUpdate(BaseModel):
    """Only the fields sent change; `rate_limit_overrides: null` clears them, `tenant:
    null` takes the user out of its tenant; a new `password` refuses earlier tokens."""

    model_config = ConfigDict(extra="forbid")

    tier: str | None = None
    scopes: list[str] | None = None
    disabled: bool | None = None
    password: str | None = Password
    rate_limit_overrides: Overrides | None = None
    tenant: str | None = None


class UserOut(BaseModel):
    id: int
    username: str
    disabled: bool
    tier: str
    scopes: list[str]
    has_password: bool
    rate_limit_overrides: dict[str, Any] | None
    tenant: str | None
    created_at: str
    updated_at: str


def _future(value: datetime | None) -> datetime | None:
    if value is not None and value <= datetime.now(UTC):
        raise ValueError("expires_at must be in the future")
    return value


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int | None = None
    username: str | None = None
    """The owner, by id or by name (one of them)."""
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] | None = None
    """Default: the owner's scopes; never more than the owner has."""
    tier: str | None = None
    """Default: the owner's tier. Limits follow the owner's tier whatever this says."""
    expires_at: AwareDatetime | None = None
    rate_limit_overrides: Overrides | None = None

    _future_expiry = field_validator("expires_at")(_future)


class KeyUpdate(BaseModel):
    """Only the fields sent change; `expires_at: null` removes the expiry."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    scopes: list[str] | None = None
    tier: str | None = None
    expires_at: AwareDatetime | None = None
    rate_limit_overrides: Overrides | None = None

    _future_expiry = field_validator("expires_at")(_future)


class KeyOut(BaseModel):
    id: int
    prefix: str
    name: str
    user_id: int
    username: str
    scopes: list[str]
    tier: str
    status: str
    rate_limit_overrides: dict[str, Any] | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class KeyCreated(KeyOut):
    key: str
    """The API key itself: shown in this response only, never again."""
