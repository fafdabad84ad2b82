"""What only the Redis backend does: share buckets across processes, survive outages."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import redis.asyncio

from mlgate.ratelimit import Decision, Hit, Limit, RateLimiterUnavailable, redis_backend
from mlgate.ratelimit.redis_backend import RedisRateLimiter
from tests.ratelimit.conftest import LogRecorder, SilentServer, TcpProxy

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"

WORKER = """
import asyncio, sys
from mlgate.ratelimit import Limit
from mlgate.ratelimit.redis_backend import RedisRateLimiter

async def main(url, prefix, n):
    limiter = RedisRateLimiter.from_url(url, prefix=prefix, fail_open=False, timeout=5)
    assert await limiter.check()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    limit = Limit.per_minute(n)
    decisions = await asyncio.gather(*(limiter.hit("shared", limit) for _ in range(n)))
    print(sum(d.allowed for d in decisions), flush=True)
    await limiter.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_exactly_n_of_3n_hits_from_three_processes(redis_url: str, key_prefix: str) -> None:
    n = 30
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            redis_url,
            key_prefix,
            str(n),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert await asyncio.wait_for(worker.stdout.readline(), 20) == b"ready\n"
        for worker in workers:  # release all three at once
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
        outputs = [await asyncio.wait_for(w.communicate(), 20) for w in workers]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert [w.returncode for w in workers] == [0, 0, 0]
    admitted = [int(stdout) for stdout, _ in outputs]
    assert sum(admitted) == n, admitted


async def test_two_clients_share_one_bucket(redis_url: str, key_prefix: str) -> None:
    first = RedisRateLimiter.from_url(redis_url, prefix=key_prefix)
    second = RedisRateLimiter.from_url(redis_url, prefix=key_prefix)
    limit = Limit.per_minute(4)
    try:
        results = [await (first, second)[i % 2].hit("both", limit) for i in range(5)]
    finally:
        await first.close()
        await second.close()
    assert [d.allowed for d in results] == [True] * 4 + [False]


async def test_state_is_an_exact_tat_that_expires_when_full(
    redis_limiter: RedisRateLimiter, key_prefix: str, redis_url: str
) -> None:
    decision = await redis_limiter.hit("stored", Limit.per_minute(10), cost=3)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        value = await client.get(f"{key_prefix}stored")
        ttl_ms = await client.pttl(f"{key_prefix}stored")
        seconds, micros = await client.time()
    finally:
        await client.aclose()
    assert value is not None and value.isdigit()  # not 1.7e+15: no precision lost
    assert abs(int(value) - (seconds * 1_000_000 + micros) - 18_000_000) < 1_000_000
    assert decision.reset_after == 18.0
    assert 17_000 < ttl_ms <= 18_000


async def test_noscript_falls_back_to_eval(
    redis_limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend, "GCRA_SHA", "0" * 40)  # a script Redis never saw
    decisions = [await redis_limiter.hit("noscript", Limit.per_minute(2)) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert redis_limiter.healthy


async def test_down_redis_fails_open_fast(ratelimit_log: LogRecorder) -> None:
    limiter = RedisRateLimiter.from_url(CLOSED_PORT_URL, fail_open=True, retry_interval=0.05)
    limit = Limit.per_minute(1)
    try:
        started = time.perf_counter()
        decisions = [await limiter.hit("k", limit) for _ in range(20)]
        await asyncio.sleep(0.06)  # past the retry interval: the next hit tries again
        decisions.append(await limiter.hit("k", limit))
        elapsed = time.perf_counter() - started
        assert elapsed < 1
        assert all(d.allowed and d.degraded for d in decisions)
        assert decisions[0].headers() == {}
        assert not limiter.healthy
        assert not await limiter.check()
    finally:
        await limiter.close()
    assert len(ratelimit_log.at(20)) == 0
    warnings = ratelimit_log.at(30)
    assert len(warnings) == 1 and "fails open" in warnings[0]


async def test_down_redis_fails_closed_with_503() -> None:
    limiter = RedisRateLimiter.from_url(CLOSED_PORT_URL, fail_open=False, retry_interval=2.5)
    try:
        started = time.perf_counter()
        for _ in range(3):
            with pytest.raises(RateLimiterUnavailable) as caught:
                await limiter.hit("k", Limit.per_minute(1))
        assert time.perf_counter() - started < 1
    finally:
        await limiter.close()
    assert caught.value.status_code == 503
    assert caught.value.code == "rate_limiter_unavailable"
    assert caught.value.headers == {"Retry-After": "3"}


async def test_a_hanging_redis_costs_one_timeout_then_nothing(
    silent_server: SilentServer,
) -> None:
    url = f"redis://127.0.0.1:{silent_server.port}/0"
    limiter = RedisRateLimiter.from_url(url, timeout=0.1, retry_interval=30)
    try:
        started = time.perf_counter()
        first = await limiter.hit("k", Limit.per_minute(1))
        first_took = time.perf_counter() - started
        started = time.perf_counter()
        later = [await limiter.hit("k", Limit.per_minute(1)) for _ in range(50)]
        later_took = time.perf_counter() - started
        assert not await limiter.check()
    finally:
        await limiter.close()
    assert first.degraded and all(d.degraded for d in later)
    assert first_took < 1
    assert later_took < 0.05  # no call reached the hanging server


async def test_recovers_when_redis_comes_back(
    redis_proxy: TcpProxy, key_prefix: str, ratelimit_log: LogRecorder
) -> None:
    limiter = RedisRateLimiter.from_url(
        redis_proxy.url, prefix=key_prefix, timeout=0.2, retry_interval=0.05
    )
    limit = Limit.per_minute(100)
    try:
        assert not (await limiter.hit("k", limit)).degraded
        await redis_proxy.stop()
        assert (await limiter.hit("k", limit)).degraded
        assert (await limiter.hit("k", limit)).degraded
        assert not limiter.healthy
        await redis_proxy.start()
        await asyncio.sleep(0.06)
        back = await limiter.hit("k", limit)
        assert limiter.healthy
        assert await limiter.check()
    finally:
        await limiter.close()
    assert not back.degraded
    assert back.remaining == 98  # the bucket survived the outage; degraded hits spent nothing
    assert len(ratelimit_log.at(30)) == 1
    assert ratelimit_log.at(20) == ["Redis answers again; rate limiting restored"]


async def test_check_alone_detects_recovery(redis_proxy: TcpProxy) -> None:
    limiter = RedisRateLimiter.from_url(redis_proxy.url, timeout=0.2, retry_interval=60)
    try:
        await redis_proxy.stop()
        assert not await limiter.check()
        await redis_proxy.start()
        assert await limiter.check()
        assert limiter.healthy
        assert not (await limiter.hit("k", Limit.per_minute(1))).degraded
    finally:
        await limiter.close()


class ScriptRuns:
    """Counts the script runs a limiter sends (to the real Redis behind it)."""

    def __init__(self, limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []  # the number of callers each run decided
        run = limiter._run

        async def counted(keys: list[str], args: list[int]) -> list[int]:
            self.calls.append(args[0])
            return await run(keys, args)

        monkeypatch.setattr(limiter, "_run", counted)


async def test_concurrent_calls_share_script_runs(
    redis_limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = ScriptRuns(redis_limiter, monkeypatch)
    limit = Limit.per_minute(30)
    decisions = await asyncio.gather(*(redis_limiter.hit("pipelined", limit) for _ in range(90)))
    # All 90 were made before the sender ran: one script run decides them.
    assert runs.calls == [90]
    assert sum(d.allowed for d in decisions) == 30
    # Decided in arrival order, each seeing the ones before it.
    assert [d.remaining for d in decisions[:30]] == list(range(29, -1, -1))
    assert not any(d.allowed for d in decisions[30:])


async def test_a_lone_call_is_sent_at_once(
    redis_limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = ScriptRuns(redis_limiter, monkeypatch)
    for _ in range(3):
        assert (await redis_limiter.hit("alone", Limit.per_minute(10))).allowed
    assert runs.calls == [1, 1, 1]


async def test_calls_in_one_run_stay_all_or_nothing_each(
    redis_limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = ScriptRuns(redis_limiter, monkeypatch)
    requests, rows = Limit(100, 86400.0, 100), Limit(10, 86400.0, 10)
    costs = [1, 6, 5, 4, 2, 9]  # 10 rows: 1 and 6 fit, 5 and 4 do not, 2 does, 9 not
    results = await asyncio.gather(
        *(
            redis_limiter.hit_many([Hit("req:g", requests), Hit("rows:g", rows, cost)])
            for cost in costs
        )
    )
    assert runs.calls == [6]
    assert [[d.allowed for d in r] for r in results] == [
        [True, True],
        [True, True],
        [True, False],  # a refused call charges none of its buckets...
        [True, False],
        [True, True],
        [True, False],
    ]
    # ...so the request bucket counts only the three admitted calls.
    assert (await redis_limiter.hit("req:g", requests, 0)).remaining == 97


async def test_a_caller_gone_before_its_run_is_not_charged(
    redis_limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = ScriptRuns(redis_limiter, monkeypatch)
    limit = Limit(10, 86400.0, 10)
    first = asyncio.create_task(redis_limiter.hit("gone", limit))
    await asyncio.sleep(0)  # the first call is on its way
    second = asyncio.create_task(redis_limiter.hit("gone", limit, 5))
    await asyncio.sleep(0)
    second.cancel()
    assert (await first).remaining == 9
    with pytest.raises(asyncio.CancelledError):
        await second
    assert (await redis_limiter.hit("gone", limit, 0)).remaining == 9
    assert runs.calls == [1, 1]


def silent_limiter(server: SilentServer, timeout: float) -> RedisRateLimiter:
    """A fail-open limiter whose script runs hang (until ``timeout``)."""
    url = f"redis://127.0.0.1:{server.port}/0"
    return RedisRateLimiter.from_url(url, timeout=timeout, retry_interval=30)


async def a_hanging_call(limiter: RedisRateLimiter) -> asyncio.Task[Decision]:
    """A call whose script run is on its way (and hangs): calls made now queue behind it."""
    call = asyncio.create_task(limiter.hit("k", Limit.per_minute(1)))
    await asyncio.sleep(0.05)
    return call


async def test_calls_behind_a_hanging_run_cost_no_second_timeout(
    silent_server: SilentServer,
) -> None:
    limiter = silent_limiter(silent_server, timeout=0.2)
    try:
        first_done: list[float] = []
        first = await a_hanging_call(limiter)
        first.add_done_callback(lambda _: first_done.append(time.perf_counter()))
        queued = await asyncio.gather(*(limiter.hit("k", Limit.per_minute(1)) for _ in range(20)))
        queued_done = time.perf_counter()
        assert (await first).degraded
    finally:
        await limiter.close()
    assert all(d.degraded for d in queued)
    # Answered as soon as the first run failed, not after a run of their own timed out.
    assert queued_done - first_done[0] < 0.05


async def test_close_waits_for_the_calls_on_their_way(redis_url: str, key_prefix: str) -> None:
    limiter = RedisRateLimiter.from_url(redis_url, prefix=key_prefix, fail_open=False)
    calls = [asyncio.create_task(limiter.hit("closing", Limit.per_minute(5))) for _ in range(8)]
    await asyncio.sleep(0)
    await limiter.close()
    decisions = [await call for call in calls]
    assert sum(d.allowed for d in decisions) == 5


async def test_callers_are_answered_when_the_sender_is_cancelled(
    silent_server: SilentServer,
) -> None:
    limiter = silent_limiter(silent_server, timeout=5)
    try:
        on_its_way = await a_hanging_call(limiter)
        queued = asyncio.create_task(limiter.hit("k", Limit.per_minute(1)))
        await asyncio.sleep(0)
        sender = limiter._sender
        assert sender is not None
        sender.cancel()  # as at shutdown
        decisions = await asyncio.wait_for(asyncio.gather(on_its_way, queued), 1)
    finally:
        await limiter.close()
    assert all(d.degraded for d in decisions)  # failed open, not left hanging
