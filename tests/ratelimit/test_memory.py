"""What only the memory backend does: keep its dict bounded."""

from __future__ import annotations

from mlgate.ratelimit import Limit, MemoryRateLimiter

SECOND = 1_000_000


class FakeClock:
    """Microseconds that move only when told."""

    def __init__(self) -> None:
        self.now = 5 * SECOND

    def __call__(self) -> int:
        return self.now


async def test_full_buckets_are_swept() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(sweep_interval=10, clock=clock)
    limit = Limit(rate=1, period=1.0, burst=1)
    for i in range(100):
        await limiter.hit(f"ip:{i}", limit)
    assert len(limiter) == 100
    clock.now += 11 * SECOND
    await limiter.hit("late", limit)
    assert len(limiter) == 1


async def test_a_peek_or_refusal_at_a_full_bucket_stores_nothing() -> None:
    limiter = MemoryRateLimiter()
    await limiter.hit("peek", Limit.per_minute(5), cost=0)
    await limiter.hit("never", Limit.per_minute(5), cost=6)
    assert len(limiter) == 0


async def test_the_least_recently_hit_key_goes_first_beyond_max_keys() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(max_keys=3, clock=clock)
    limit = Limit.per_minute(1)
    for key in ("a", "b", "c"):
        await limiter.hit(key, limit)
    await limiter.hit("a", limit)  # refused, but now the most recent
    await limiter.hit("d", limit)  # evicts "b"
    assert len(limiter) == 3
    assert not (await limiter.hit("a", limit)).allowed
    assert not (await limiter.hit("c", limit)).allowed
    assert (await limiter.hit("b", limit)).allowed  # forgotten, so admitted again


async def test_refill_follows_the_clock_exactly() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limit = Limit.per_minute(60)  # one a second
    assert sum([(await limiter.hit("k", limit)).allowed for _ in range(70)]) == 60
    clock.now += SECOND - 1
    assert not (await limiter.hit("k", limit)).allowed
    clock.now += 1
    assert (await limiter.hit("k", limit)).allowed
    clock.now += 3 * SECOND
    assert sum([(await limiter.hit("k", limit)).allowed for _ in range(10)]) == 3


async def test_close_forgets_everything() -> None:
    limiter = MemoryRateLimiter()
    await limiter.hit("k", Limit.per_minute(1))
    await limiter.close()
    assert (await limiter.hit("k", Limit.per_minute(1))).allowed
