"""Tables of users, API keys, device baselines, detectors and shares, drift histograms,
alias moves and the prediction audit log.

Users and keys are never deleted: users are disabled and keys revoked, so that the audit
log can reference ``users.id`` and ``api_keys.id`` for good.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
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


class DeviceDetectorRow(Base):
    """A device's own detector for one model version (``mlgate.devices.detectors``).

    While calibrating, ``calibration`` holds the readings so far (rows of ``features``);
    after ``required`` of them, ``detector`` is the fitted ``DeviceModel`` and ``stream``
    the ``StreamState`` after the last scored reading (smoothing and debouncing history),
    which every worker updates under the row's lock. ``params`` is the recipe it was made
    with. Owners and shares work as for :class:`DeviceBaselineRow`.
    """

    __tablename__ = "device_detectors"

    owner: Mapped[str] = mapped_column(String(80), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    features: Mapped[list[str]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    required: Mapped[int] = mapped_column(Integer)
    seen: Mapped[int] = mapped_column(Integer, default=0)
    calibration: Mapped[list[list[float]] | None] = mapped_column(JSON)
    detector: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stream: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    scored: Mapped[int] = mapped_column(Integer, default=0)
    alarms: Mapped[int] = mapped_column(Integer, default=0)
    revision: Mapped[int] = mapped_column(Integer, default=1)
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


# -- signals: drift histograms and alias moves (issue 10, part B) ---------------------


class DriftCount(Base):
    """How many rows of one model version fell in one bin of one feature in one window.

    Workers add their counts (``INSERT ... ON CONFLICT DO UPDATE SET count = count +
    excluded.count``), so the histograms are the sum over every worker. ``feature`` is a
    feature name, or ``@predicted`` for the predicted classes (``bin`` = class index;
    anomaly models: 0 normal, 1 anomaly).
    """

    __tablename__ = "drift_counts"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """Seconds since the epoch, a multiple of the bucket width."""
    feature: Mapped[str] = mapped_column(String(200), primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ModelAliasRow(Base):
    """An alias moved through the admin API: it wins over model.yaml in every worker."""

    __tablename__ = "model_aliases"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    moved_by: Mapped[str] = mapped_column(String(200))
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AliasMoveRow(Base):
    """Who moved (or removed) which alias of which model, from what to what, and when."""

    __tablename__ = "alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    alias: Mapped[str] = mapped_column(String(32))
    from_version: Mapped[str | None] = mapped_column(String(64))
    """The version the alias pointed at in the worker that moved it (None: unset)."""
    to_version: Mapped[str | None] = mapped_column(String(64))
    """None: the override was removed (model.yaml applies again)."""
    moved_by: Mapped[str] = mapped_column(String(200))
    """Username (or key owner) of the admin."""
    principal: Mapped[str] = mapped_column(String(64))
    """``user:<id>`` or ``key:<id>``."""
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# -- prediction audit log (issue 10) -------------------------------------------------------


class PredictionRequest(Base):
    """What every row of one answered request shares: when, who, which model version.
    Written in batches off the request path (:mod:`mlgate.audit.writer`), with the rows
    of :class:`PredictionRow`; read through the ``predictions`` view
    (:class:`PredictionRecord`).

    A shadow version's answer to the same request is a second request record with
    ``shadow`` true. The key's first characters encode the millisecond the request was
    answered, so time ranges and retention are ranges of the primary key (no index on
    ``created_at`` to maintain on every insert). Per-request columns are stored once per
    request rather than on every row: a 1,000-row request inserts 1,000 narrow rows and
    one of these (measured on SQLite: 3.8 against 6.6 ms of CPU per 1,000 rows).
    """

    __tablename__ = "prediction_requests"
    __table_args__ = (
        Index("ix_prediction_requests_model_key", "model", "request_key"),
        Index("ix_prediction_requests_user_key", "user_id", "request_key"),
    )

    request_key: Mapped[str] = mapped_column(String(26), primary_key=True)
    shadow: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Who asked: ``user:7``, ``key:12`` or ``anonymous``; the owner is ``user_id`` (a key's
    # user). No foreign keys: inserts stay cheap and users are never deleted anyway.
    principal: Mapped[str | None] = mapped_column(String(40))
    user_id: Mapped[int | None] = mapped_column(Integer)
    key_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    device_id: Mapped[str | None] = mapped_column(String(128))
    cache_hit: Mapped[bool] = mapped_column(Boolean)


class PredictionRow(Base):
    """One scored row of one request: a hash of the input and the output. Prediction
    ``<request_key>-<row_index>``; its request is ``(request_key, shadow)`` of
    :class:`PredictionRequest`."""

    __tablename__ = "prediction_rows"

    request_key: Mapped[str] = mapped_column(String(26), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    shadow: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    # BLAKE2b (16 bytes, hex) of the row as the model received it (runtime dtype).
    input_hash: Mapped[str] = mapped_column(String(32))
    # Classification: the predicted class (index and name), its probability, all of them.
    predicted_class: Mapped[int | None] = mapped_column(Integer)
    predicted: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    is_attack: Mapped[bool | None] = mapped_column(Boolean)
    # Anomaly: score, verdict, threshold; NULL while a device calibrates (no verdict).
    score: Mapped[float | None] = mapped_column(Float)
    is_anomaly: Mapped[bool | None] = mapped_column(Boolean)
    threshold: Mapped[float | None] = mapped_column(Float)
    calibration_seen: Mapped[int | None] = mapped_column(Integer)
    # The raw row, only for models configured to keep it (MLGATE_AUDIT__RAW_INPUT_MODELS).
    inputs: Mapped[list[float | None] | None] = mapped_column(JSON)


class ViewBase(DeclarativeBase):
    """Classes mapped onto views (created by migrations, never by ``create_all``)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PredictionRecord(ViewBase):
    """One prediction (a row with its request's columns), read-only: the ``predictions``
    view over :class:`PredictionRequest` and :class:`PredictionRow` (created by migration
    0007), on which the readers of the audit log query."""

    __tablename__ = "predictions"

    request_key: Mapped[str] = mapped_column(String(26), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    shadow: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(128))
    principal: Mapped[str | None] = mapped_column(String(40))
    user_id: Mapped[int | None] = mapped_column(Integer)
    key_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    device_id: Mapped[str | None] = mapped_column(String(128))
    cache_hit: Mapped[bool] = mapped_column(Boolean)
    input_hash: Mapped[str] = mapped_column(String(32))
    predicted_class: Mapped[int | None] = mapped_column(Integer)
    predicted: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    is_attack: Mapped[bool | None] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float)
    is_anomaly: Mapped[bool | None] = mapped_column(Boolean)
    threshold: Mapped[float | None] = mapped_column(Float)
    calibration_seen: Mapped[int | None] = mapped_column(Integer)
    inputs: Mapped[list[float | None] | None] = mapped_column(JSON)


class PredictionFeedback(Base):
    """The ground truth of one prediction (row), as its owner or an admin labelled it.

    One per prediction: a second label replaces the first. Served and shadow records of
    the row share it.
    """

    __tablename__ = "prediction_feedback"

    request_key: Mapped[str] = mapped_column(String(26), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str | None] = mapped_column(String(64))
    """The true class name (classifiers)."""
    is_anomaly: Mapped[bool | None] = mapped_column(Boolean)
    """The true verdict (anomaly models)."""
    labelled_by: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageCounter(Base):
    """Requests, rows, errors and rate-limit refusals of one principal, tier and model on
    one UTC day. Workers add their increments (upserts), so counts add up across them."""

    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_user_id", "user_id"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    principal: Mapped[str] = mapped_column(String(40), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    # '' for errors of requests that named no served model.
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    refusals: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageFlush(Base):
    """A batch of usage increments already added (by its flush id): a retried batch whose
    first commit succeeded is recognised and not added twice. Kept for a week."""

    __tablename__ = "usage_flushes"

    flush_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
