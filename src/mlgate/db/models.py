"""Tables of users, API keys, device baselines and device shares.

Rows are never deleted: users are disabled and keys revoked, so that the audit log (a
later migration) can reference ``users.id`` and ``api_keys.id`` for good.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so that migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


MAX_ROW_ID = 2**31 - 1
"""Largest id an ``Integer`` primary key holds on every backend (PostgreSQL's int4)."""


def storable_id(value: int) -> bool:
    """Whether ``value`` can be a row id: a larger one would make the driver raise
    (asyncpg: out of int32 range; SQLite: beyond 64 bits) rather than find nothing."""
    return 1 <= value <= MAX_ROW_ID


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL: the user cannot log in with a password (API keys only).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    tier: Mapped[str] = mapped_column(String(32))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    rate_limit_overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Grows with every password change or "revoke sessions": an access token carries the
    # value it was issued under and is refused once they differ.
    token_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # An admin-defined group whose members share device baselines; NULL: the user alone.
    tenant: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user", lazy="raise")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The public part of the key, what a request is looked up by.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    # SHA-256 of the whole key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    tier: Mapped[str] = mapped_column(String(32))
    rate_limit_overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="api_keys", lazy="raise")


class DeviceBaselineRow(Base):
    """A device's baseline for one model: running sums while calibrating, then mean/std.

    ``owner`` is whose device it is (``user:7``, ``tenant:acme``; see
    :mod:`mlgate.devices.owners`): every owner has a namespace of device ids of its own.
    ``seen`` counts the readings accumulated so far (``sums``/``sumsq`` per feature);
    once ``seen >= required`` (or after an upload) ``mean``/``std`` are set.
    ``revision`` grows with every change so that workers can tell a cached copy is old.
    """

    __tablename__ = "device_baselines"

    owner: Mapped[str] = mapped_column(String(80), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    features: Mapped[list[str]] = mapped_column(JSON)
    required: Mapped[int] = mapped_column(Integer)
    seen: Mapped[int] = mapped_column(Integer, default=0)
    sums: Mapped[list[float]] = mapped_column(JSON)
    sumsq: Mapped[list[float]] = mapped_column(JSON)
    mean: Mapped[list[float] | None] = mapped_column(JSON)
    std: Mapped[list[float] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    # Unused by the server; kept for operators (when the baseline was ready).
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeviceShareRow(Base):
    """An admin's grant: for ``grantee``, device id ``device_id`` means ``owner``'s device
    of that id (every model's baseline of it), instead of a device of its own."""

    __tablename__ = "device_shares"

    grantee: Mapped[str] = mapped_column(String(80), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(80), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
