"""The cache backends behind one protocol: the same behaviour in memory and in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from mlgate.cache.backends import CacheBackend, MemoryCache, pack, unpack
from mlgate.cache.redis_backend import RedisCache
from tests.ratelimit.conftest import scratch_prefix


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    if request.param == "memory":
        yield MemoryCache(100)
        return
    url = request.getfixturevalue("redis_url")
    async with scratch_prefix(url) as prefix:
        cache = RedisCache.from_url(url, prefix=prefix, timeout=1.0, retry_interval=1.0)
        yield cache
        await cache.close()


async def test_round_trip_is_exact(backend: CacheBackend) -> None:
    probabilities = np.random.default_rng(0).dirichlet(np.ones(7), size=5)
    scores = np.array([0.1, -0.0, 1e-300, np.pi])
    await backend.put("ids/1/a", "d1", probabilities, 60)
    await backend.put("iot/2/b", "d1", scores, 60)
    got = await backend.get("ids/1/a", "d1")
    assert got is not None and got.shape == (5, 7)
    assert got.tobytes() == probabilities.tobytes()
    got_scores = await backend.get("iot/2/b", "d1")
    assert got_scores is not None and got_scores.tobytes() == scores.tobytes()
    assert await backend.get("ids/1/a", "other") is None
    assert await backend.get("ids/2/a", "d1") is None


async def test_entries_expire(backend: CacheBackend) -> None:
    await backend.put("m/1/x", "d", np.ones(3), 0.001)
    await asyncio.sleep(0.05)
    assert await backend.get("m/1/x", "d") is None


async def test_a_stored_answer_cannot_be_changed_through_a_hit(backend: CacheBackend) -> None:
    value = np.ones(3)
    await backend.put("m/1/x", "d", value, 60)
    value[0] = 5.0  # the caller's array changes after the put
    hit = await backend.get("m/1/x", "d")
    assert hit is not None and hit.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        hit[0] = 2.0


async def test_memory_is_a_bounded_lru_with_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(3, clock=clock)
    for i in range(3):
        await cache.put("m/1/x", f"d{i}", np.full(1, i), 10)
    assert await cache.get("m/1/x", "d0") is not None  # d0 is now the most recent
    await cache.put("m/1/x", "d3", np.full(1, 3), 10)
    assert len(cache) == 3
    assert await cache.get("m/1/x", "d1") is None  # the least recently used went
    assert await cache.get("m/1/x", "d0") is not None
    clock.now += 10
    assert await cache.get("m/1/x", "d0") is None  # expired at its deadline
    assert cache.stats()["evictions"] == 1


async def test_memory_drops_a_namespace() -> None:
    cache = MemoryCache(10)
    await cache.put("m/1/a", "d", np.ones(1), 10)
    await cache.put("m/2/b", "d", np.ones(1), 10)
    cache.drop_namespace("m/1/a")
    assert await cache.get("m/1/a", "d") is None
    assert await cache.get("m/2/b", "d") is not None
    assert len(cache) == 1


def test_pack_unpack() -> None:
    for array in (np.arange(6.0).reshape(2, 3), np.array([1.5]), np.zeros((0, 7))):
        assert unpack(pack(array)).tobytes() == array.tobytes()
        assert unpack(pack(array)).shape == array.shape
