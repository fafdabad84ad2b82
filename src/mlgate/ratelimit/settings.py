"""Rate-limit configuration: tiers and their overrides, brute-force limits, trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlgate.ratelimit.base import Limit

# Upper bounds of a tier's numbers (and of per-user or per-key overrides, which are
# checked with them before they are stored): far beyond any real limit, and small enough
# that the numbers stay exact in JSON, in the database and in Redis's Lua doubles.
MAX_REQUESTS = 10**9
MAX_ROWS = 10**12


class TierLimits(BaseModel):
    """What one principal of a tier may spend per minute."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid", frozen=True)

    requests_per_minute: int = Field(gt=0, le=MAX_REQUESTS)
    """Requests admitted per minute, whatever their size."""
    rows_per_minute: int = Field(gt=0, le=MAX_ROWS)
    """Batch rows admitted per minute (a batch of 500 rows costs 500)."""
    burst: int | None = Field(default=None, gt=0, le=MAX_REQUESTS)
    """Requests admitted at once after a quiet minute; unset means requests_per_minute."""
    rows_burst: int | None = Field(default=None, gt=0, le=MAX_ROWS)
    """Rows admitted at once; unset means rows_per_minute. A batch larger than this is
    never admitted, so keep it at least the largest batch allowed."""

    @model_validator(mode="after")
    def _buckets_drain(self) -> Self:
        # Limit refuses a bucket that would take decades to drain (a tiny rate with a
        # huge burst); say so here, where the numbers are given.
        self.requests_limit()
        self.rows_limit()
        return self

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> TierLimits:
        """These limits with some fields replaced, e.g. ``{"requests_per_minute": 500}``.

        Raises :class:`pydantic.ValidationError` on an unknown field or a bad value; call
        it when overrides are stored, so that a bad one never reaches a request.
        """
        if not overrides:
            return self
        return TierLimits.model_validate({**self.model_dump(), **overrides})

    def requests_limit(self) -> Limit:
        """The per-principal request limit."""
        return Limit.per_minute(self.requests_per_minute, self.burst)

    def rows_limit(self) -> Limit:
        """The per-principal batch-row limit."""
        return Limit.per_minute(self.rows_per_minute, self.rows_burst)


def _default_tiers() -> dict[str, TierLimits]:
    return {
        "free": TierLimits(requests_per_minute=10, rows_per_minute=1_000),
        "pro": TierLimits(requests_per_minute=100, rows_per_minute=10_000),
        "enterprise": TierLimits(requests_per_minute=1_000, rows_per_minute=100_000),
    }


class RateLimitSettings(BaseModel):
    """Per-principal and per-IP rate limits (GCRA, in memory or in Redis)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = True
    """Apply rate limits at all."""
    backend: Literal["memory", "redis"] = "memory"
    """memory: exact for one worker; redis: shared by all workers (needs MLGATE_REDIS_URL)."""
    redis_key_prefix: str = Field(default="mlgate:rl:", min_length=1)
    """Prefix of every rate-limit key in Redis."""
    fail_open: bool = True
    """When Redis is down: admit requests (True) or answer 503 (False)."""
    redis_timeout_s: float = Field(default=0.25, gt=0, le=5)
    """Redis connect and read timeout, so that a dead Redis does not stall requests."""
    redis_max_connections: int = Field(default=50, ge=1)
    """Connections per worker to Redis; more concurrent hits wait for one."""
    outage_retry_s: float = Field(default=1.0, gt=0, le=60)
    """During an outage, try Redis again at most this often."""
    memory_max_keys: int = Field(default=100_000, ge=1)
    """Most buckets the memory backend keeps; the least recently used go first."""
    tiers: dict[str, TierLimits] = Field(default_factory=_default_tiers)
    """Limits by tier name."""
    default_tier: str = "free"
    """Tier of principals whose tier is unset or unknown."""
    login_per_minute: int = Field(default=10, gt=0, le=MAX_REQUESTS)
    """Login attempts (right or wrong) per client address per minute."""
    failed_auth_per_minute: int = Field(default=10, gt=0, le=MAX_REQUESTS)
    """Failed authentications per client address per minute; beyond them further failing
    attempts get 429 instead of 401 (valid credentials are still served)."""
    username_failures_before_backoff: int = Field(default=5, ge=1, le=50)
    """Wrong passwords for one username (from any address) before it backs off: each
    further one locks password logins of that username for 1, 2, 4, 8 ... seconds."""
    username_backoff_max_s: int = Field(default=900, ge=1, le=86_400)
    """Longest lock of a username's password logins after wrong passwords, in seconds."""
    username_failure_decay_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    """A username's count of wrong passwords goes down by one every this many seconds."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Proxy IPs or CIDRs whose X-Forwarded-For is believed; empty trusts none."""
    ipv4_prefix_length: int = Field(default=32, ge=8, le=32)
    """Per-address limits (logins, failed authentications, anonymous callers) count
    IPv4 clients per network of this many bits (32: each address on its own)."""
    ipv6_prefix_length: int = Field(default=64, ge=16, le=128)
    """Per-address limits count IPv6 clients per network of this many bits: a
    subscriber usually holds a whole /64 (128: each address on its own)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(item.strip(), strict=False)) for item in value]
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None

    @model_validator(mode="after")
    def _default_tier_exists(self) -> Self:
        if self.default_tier not in self.tiers:
            raise ValueError(
                f"default_tier {self.default_tier!r} is not one of the tiers {sorted(self.tiers)}"
            )
        return self

    def limits_for(
        self, tier: str | None, overrides: Mapping[str, Any] | None = None
    ) -> TierLimits:
        """A principal's limits: its tier's (the default tier's if unknown), overridden.

        `overrides` is the principal's ``rate_limit_overrides``, set per user or key.
        """
        limits = self.tiers.get(tier or self.default_tier) or self.tiers[self.default_tier]
        return limits.with_overrides(overrides)

    def check_overrides(self, overrides: Mapping[str, Any]) -> None:
        """Raise ValueError, in one line naming the field, for overrides that no tier
        could take (unknown fields, numbers out of range); call it before storing them."""
        try:
            self.limits_for(None, overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None

    def login_limit(self) -> Limit:
        """Login attempts per client address."""
        return Limit.per_minute(self.login_per_minute)

    def failed_auth_limit(self) -> Limit:
        """Failed authentications per client address."""
        return Limit.per_minute(self.failed_auth_per_minute)

    def username_failures_limit(self) -> Limit:
        """The count of a username's wrong passwords: one unit per failure, draining one
        unit every ``username_failure_decay_s``; the units in it are the count."""
        return Limit(rate=1, period=float(self.username_failure_decay_s), burst=64)

    def username_lock_limit(self) -> Limit:
        """A username's lock: its units are the seconds left (one drains each second)."""
        return Limit(rate=1, period=1.0, burst=self.username_backoff_max_s)

    def username_lock_seconds(self, failures: int) -> int:
        """How long ``failures`` wrong passwords lock a username: none before
        ``username_failures_before_backoff``, then 1, 2, 4 ... up to the maximum."""
        over = failures - self.username_failures_before_backoff
        if over < 0:
            return 0
        return int(min(self.username_backoff_max_s, 2 ** min(over, 30)))
