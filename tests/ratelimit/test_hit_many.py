"""A request's buckets in one limiter call: atomic, all or nothing, on both backends."""

from __future__ import annotations

import asyncio

import pytest

from mlgate.ratelimit import Hit, Limit, RateLimiter


async def test_all_admit_then_all_are_charged(limiter: RateLimiter) -> None:
    requests, rows = Limit.per_minute(10), Limit.per_minute(100)
    decisions = await limiter.hit_many([Hit("req:a", requests), Hit("rows:a", rows, 40)])
    assert [d.allowed for d in decisions] == [True, True]
    assert [d.remaining for d in decisions] == [9, 60]
    # The buckets are those of single hits: a single hit sees the charge.
    assert (await limiter.hit("rows:a", rows, 0)).remaining == 60


async def test_one_refusal_charges_nothing(limiter: RateLimiter) -> None:
    requests, rows = Limit.per_minute(10), Limit.per_minute(100)
    await limiter.hit("rows:b", rows, 90)
    decisions = await limiter.hit_many([Hit("req:b", requests), Hit("rows:b", rows, 20)])
    assert [d.allowed for d in decisions] == [True, False]
    assert decisions[1].retry_after > 0
    # Neither bucket moved: the request bucket still has all 10.
    assert (await limiter.hit("req:b", requests, 0)).remaining == 10
    assert (await limiter.hit("rows:b", rows, 0)).remaining == 10


async def test_concurrent_charges_never_overspend(limiter: RateLimiter) -> None:
    # A day's period: nothing refills while the test runs.
    requests, rows = Limit(1000, 86400.0, 1000), Limit(50, 86400.0, 50)
    results = await asyncio.gather(
        *(limiter.hit_many([Hit("req:c", requests), Hit("rows:c", rows, 3)]) for _ in range(40))
    )
    admitted = [r for r in results if all(d.allowed for d in r)]
    assert len(admitted) == 16  # 16 x 3 = 48 <= 50 < 51
    assert (await limiter.hit("req:c", requests, 0)).remaining == 1000 - 16


async def test_same_bucket_twice_is_a_programming_error(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="twice"):
        await limiter.hit_many([Hit("k", Limit.per_minute(1)), Hit("k", Limit.per_minute(1))])
    assert await limiter.hit_many([]) == []
