"""What every rate limiter shares: the limit, the decision, the protocol and the factory."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mlgate.errors import ServiceUnavailable
from mlgate.ratelimit import gcra

if TYPE_CHECKING:
    from mlgate.ratelimit.settings import RateLimitSettings


class RateLimiterUnavailable(ServiceUnavailable):
    """The limiter's store is unreachable and the limiter is set to fail closed (503).

    Raised rather than answered as a refusal: a 429 would tell the client that it went
    over its limit, which it did not. Carries a ``Retry-After`` header.
    """

    code = "rate_limiter_unavailable"


@dataclass(frozen=True, slots=True)
class Limit:
    """`rate` units of cost per `period` seconds, up to `burst` of them at once."""

    rate: int
    period: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate < 1:
            raise ValueError(f"rate must be at least 1, got {self.rate}")
        if not self.period > 0 or math.isinf(self.period):
            raise ValueError(f"period must be a positive number of seconds, got {self.period}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if self.burst * self.emission_us > gcra.MAX_BUCKET_US:
            raise ValueError(
                f"a burst of {self.burst} at {self.rate} per {self.period:g} s takes longer "
                "than 35 years to drain: lower the burst or raise the rate"
            )

    @classmethod
    def per_minute(cls, rate: int, burst: int | None = None) -> Limit:
        """`rate` a minute; the burst defaults to the whole minute's worth."""
        return cls(rate=rate, period=60.0, burst=rate if burst is None else burst)

    @property
    def emission_us(self) -> int:
        """Microseconds that one unit of cost occupies the bucket."""
        return gcra.emission_interval_us(self.rate, round(self.period * gcra.MICROSECONDS))


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one hit, and what to tell the client about it.

    `limit` is the bucket's capacity (the limit's burst), the number `remaining` counts
    down from. `retry_after` is ``math.inf`` when the cost exceeds that capacity: such
    a request is never admitted, however long the client waits (see :attr:`never`).
    `degraded` marks a decision made without the store (fail-open during an outage).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    degraded: bool = False

    @classmethod
    def from_state(cls, limit: Limit, cost: int, allowed: bool, tat: int, now: int) -> Decision:
        """The decision for a GCRA step that left theoretical arrival time `tat` at `now`."""
        emission = limit.emission_us
        if cost > limit.burst:
            retry_after = math.inf
        elif allowed:
            retry_after = 0.0
        else:
            retry_after = gcra.retry_after_us(tat, now, emission, limit.burst, cost)
            retry_after /= gcra.MICROSECONDS
        return cls(
            allowed=allowed,
            limit=limit.burst,
            remaining=gcra.remaining(tat, now, emission, limit.burst),
            reset_after=gcra.reset_after_us(tat, now) / gcra.MICROSECONDS,
            retry_after=retry_after,
        )

    @classmethod
    def unchecked(cls, limit: Limit) -> Decision:
        """An admission made without consulting the store (fail-open)."""
        return cls(
            allowed=True,
            limit=limit.burst,
            remaining=limit.burst,
            reset_after=0.0,
            retry_after=0.0,
            degraded=True,
        )

    @property
    def never(self) -> bool:
        """True when the cost exceeds the bucket's capacity: retrying cannot help."""
        return math.isinf(self.retry_after)

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (IETF httpapi draft) and, when refused, ``Retry-After``.

        Seconds are whole and rounded up, so a client that waits as told is admitted.
        A degraded decision knows nothing worth telling and yields no headers; a request
        that can never be admitted gets no ``Retry-After`` (answer it with 413 or 400
        rather than 429).
        """
        if self.degraded:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed and not self.never:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def strictest(decisions: Iterable[Decision]) -> Decision:
    """The decision whose headers to send when one request hit several limits.

    A refusal beats an admission (the longest wait first); among admissions, the one
    with the fewest remaining.
    """
    return min(
        decisions,
        key=lambda d: (d.allowed, -d.retry_after, d.remaining, -d.reset_after),
    )


@dataclass(frozen=True, slots=True)
class Hit:
    """One bucket of a request's charge: `cost` units of `key` under `limit`."""

    key: str
    limit: Limit
    cost: int = 1


def validate_hit(key: str, cost: int) -> None:
    """Refuse arguments that no backend can honour."""
    if not key:
        raise ValueError("rate-limit key must not be empty")
    if cost < 0:
        raise ValueError(f"cost must not be negative, got {cost}")


def validate_hits(hits: Sequence[Hit]) -> None:
    """Refuse a charge no backend can honour (also: one key twice in one charge)."""
    for h in hits:
        validate_hit(h.key, h.cost)
    if len({h.key for h in hits}) != len(hits):
        raise ValueError("a charge names the same bucket twice")


class RateLimiter(Protocol):
    """A store of GCRA buckets, one per key.

    Implementations: :class:`~mlgate.ratelimit.memory.MemoryRateLimiter` (one process)
    and :class:`~mlgate.ratelimit.redis_backend.RedisRateLimiter` (shared by workers).
    """

    @property
    def healthy(self) -> bool:
        """False while the store is known to be unreachable."""
        ...

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        """Spend `cost` units of `key`'s bucket if they fit, atomically; cost 0 only looks.

        Raises :class:`RateLimiterUnavailable` when the store is down and the limiter
        fails closed.
        """
        ...

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        """All of a request's buckets at once, atomically and all or nothing: when one
        refuses, none is charged. One decision per hit, in order (one round trip on
        Redis, one call in memory)."""
        ...

    async def check(self) -> bool:
        """Probe the store now (for readiness); updates :attr:`healthy`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def build_rate_limiter(settings: RateLimitSettings, redis_url: str | None) -> RateLimiter:
    """The limiter the settings ask for; the caller owns it and must `close()` it.

    `settings.enabled` is the caller's to honour (by not hitting at all). The backends
    are imported here so that the memory backend never needs the redis package.
    """
    if settings.backend == "memory":
        from mlgate.ratelimit.memory import MemoryRateLimiter

        return MemoryRateLimiter(max_keys=settings.memory_max_keys)
    if not redis_url:
        raise ValueError("the redis rate-limit backend needs a Redis URL (MLGATE_REDIS_URL)")
    from mlgate.ratelimit.redis_backend import RedisRateLimiter

    return RedisRateLimiter.from_url(
        redis_url,
        prefix=settings.redis_key_prefix,
        fail_open=settings.fail_open,
        timeout=settings.redis_timeout_s,
        retry_interval=settings.outage_retry_s,
        max_connections=settings.redis_max_connections,
    )
