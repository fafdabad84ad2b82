"""Behaviour every backend shares; each test runs on memory and on Redis."""

from __future__ import annotations

import asyncio
import math

import pytest

from mlgate.ratelimit import Limit, RateLimiter


@pytest.mark.parametrize("n", [1, 10, 40])
async def test_exactly_n_of_3n_concurrent_hits_are_admitted(limiter: RateLimiter, n: int) -> None:
    limit = Limit.per_minute(n)
    decisions = await asyncio.gather(*(limiter.hit("exact", limit) for _ in range(3 * n)))
    assert sum(d.allowed for d in decisions) == n
    assert not any(d.degraded for d in decisions)
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(n))


async def test_the_nth_hit_is_admitted_and_the_next_refused(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(10)
    decisions = [await limiter.hit("seq", limit) for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]


async def test_first_hit_headers(limiter: RateLimiter) -> None:
    decision = await limiter.hit("headers", Limit.per_minute(10))
    assert decision.reset_after == pytest.approx(6.0)
    assert decision.retry_after == 0
    assert decision.headers() == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "9",
        "RateLimit-Reset": "6",
    }


async def test_refusal_headers(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(10)
    for _ in range(10):
        last = await limiter.hit("full", limit)
    assert last.headers()["RateLimit-Reset"] == "60"
    refused = await limiter.hit("full", limit)
    assert not refused.allowed
    assert 5.5 < refused.retry_after <= 6.0
    assert refused.headers() == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": "6",
    }


async def test_refill_at_the_rate(limiter: RateLimiter) -> None:
    limit = Limit(rate=10, period=1.0, burst=5)  # one unit every 100 ms
    assert [(await limiter.hit("refill", limit)).allowed for _ in range(6)] == [True] * 5 + [False]
    refused = await limiter.hit("refill", limit)
    assert 0 < refused.retry_after <= 0.1
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await limiter.hit("refill", limit)).allowed
    again = await limiter.hit("refill", limit)
    assert not again.allowed
    await asyncio.sleep(again.reset_after + 0.02)
    after_rest = [(await limiter.hit("refill", limit)).allowed for _ in range(6)]
    assert after_rest == [True] * 5 + [False]


async def test_cost_spends_several_units(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(10)
    first = await limiter.hit("rows", limit, cost=4)
    assert (first.allowed, first.remaining) == (True, 6)
    too_many = await limiter.hit("rows", limit, cost=7)
    assert (too_many.allowed, too_many.remaining) == (False, 6)
    assert too_many.retry_after == pytest.approx(6.0, abs=0.5)
    assert not too_many.never
    exact = await limiter.hit("rows", limit, cost=6)
    assert (exact.allowed, exact.remaining) == (True, 0)


async def test_a_cost_of_the_whole_burst_is_admitted_once(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(1000)
    assert (await limiter.hit("batch", limit, cost=1000)).allowed
    assert not (await limiter.hit("batch", limit, cost=1)).allowed


async def test_a_cost_beyond_the_burst_is_never_admitted(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(10)
    decision = await limiter.hit("huge", limit, cost=11)
    assert not decision.allowed
    assert decision.never
    assert decision.retry_after == math.inf
    assert "Retry-After" not in decision.headers()
    assert decision.remaining == 10  # nothing was spent
    assert (await limiter.hit("huge", limit, cost=10)).allowed


async def test_cost_zero_only_looks(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(10)
    fresh = await limiter.hit("peek", limit, cost=0)
    assert (fresh.allowed, fresh.remaining, fresh.reset_after) == (True, 10, 0.0)
    await limiter.hit("peek", limit, cost=3)
    looked = await limiter.hit("peek", limit, cost=0)
    assert looked.remaining == 7
    assert (await limiter.hit("peek", limit, cost=0)).remaining == 7


async def test_keys_are_isolated(limiter: RateLimiter) -> None:
    limit = Limit.per_minute(2)
    for _ in range(3):
        await limiter.hit("alice", limit)
    assert not (await limiter.hit("alice", limit)).allowed
    bob = await limiter.hit("bob", limit)
    assert bob.allowed and bob.remaining == 1


async def test_one_key_under_two_limits_shares_its_state(limiter: RateLimiter) -> None:
    # The state is a time (when the bucket is full again), not a count per limit: a key
    # hit under another limit sees the time the first limit left behind.
    await limiter.hit("alice", Limit.per_minute(10), cost=10)  # full again in 60 s
    # 20 a minute has room for 20 at once on a fresh key, but not on this one: the
    # stored time is 60 s ahead, exactly its whole burst (20 x 3 s).
    shared = await limiter.hit("alice", Limit.per_minute(20), cost=1)
    assert not shared.allowed
    assert shared.remaining == 0
    assert (await limiter.hit("fresh", Limit.per_minute(20), cost=1)).allowed


async def test_keys_named_per_limit_do_not_share_state(limiter: RateLimiter) -> None:
    # Hence callers name keys by limit ("req:alice", "rows:alice"): spending one
    # leaves the other untouched.
    await limiter.hit("req:alice", Limit.per_minute(10), cost=10)
    assert not (await limiter.hit("req:alice", Limit.per_minute(10))).allowed
    assert (await limiter.hit("rows:alice", Limit.per_minute(10), cost=10)).allowed


@pytest.mark.parametrize(("key", "cost"), [("", 1), ("k", -1)])
async def test_bad_arguments_are_refused(limiter: RateLimiter, key: str, cost: int) -> None:
    with pytest.raises(ValueError):
        await limiter.hit(key, Limit.per_minute(1), cost)


async def test_healthy_and_check(limiter: RateLimiter) -> None:
    assert await limiter.check()
    assert limiter.healthy
