"""The Redis rate limiter: one bucket per key, shared by every worker and host.

Each hit is one Lua script, so read-decide-write is atomic on the server, and the
script reads the server's own clock (``TIME``) so that processes whose clocks disagree
still agree on every bucket. The script is sent once and then called by its SHA1
(``EVALSHA``); after a Redis restart or ``SCRIPT FLUSH`` the server answers NOSCRIPT and
the next call sends the text again (``EVAL``, which also caches it).

During an outage the limiter fails open (admits, with a degraded decision) or closed
(raises :class:`~mlgate.ratelimit.base.RateLimiterUnavailable`). It logs one warning
when the outage starts and one line when it ends; meanwhile it lets one request every
`retry_interval` seconds try Redis, so a dead server costs the others no time and
recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mlgate.ratelimit.base import (
    Decision,
    Hit,
    Limit,
    RateLimiterUnavailable,
    validate_hit,
    validate_hits,
)

log = logging.getLogger("mlgate.ratelimit")

# The Lua twin of gcra.step. Lua numbers are doubles: microsecond timestamps are exact,
# and the TAT is written with %d because tostring() would round it to 14 digits.
GCRA_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + cost * emission
if new_tat - burst * emission > now then
  return {0, tat, now}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%d', new_tat),
             'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
end
return {1, new_tat, now}
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()

# Several buckets at once, all or nothing: KEYS[i] with ARGV[3i-2..3i] = emission, burst,
# cost; returns now, then allowed and TAT per key (a bucket not charged because another
# refused reports the TAT it keeps).
GCRA_MANY_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = #KEYS
local tats, news, oks = {}, {}, {}
local all = true
for i = 1, n do
  local emission = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if not tat or tat < now then tat = now end
  local new_tat = tat + cost * emission
  tats[i] = tat
  news[i] = new_tat
  if new_tat - burst * emission > now then
    oks[i] = 0
    all = false
  else
    oks[i] = 1
  end
end
local out = {now}
for i = 1, n do
  local kept = tats[i]
  if all then
    kept = news[i]
    if tonumber(ARGV[3 * i]) > 0 then
      redis.call('SET', KEYS[i], string.format('%d', kept),
                 'PX', string.format('%d', math.ceil((kept - now) / 1000)))
    end
  end
  out[#out + 1] = oks[i]
  out[#out + 1] = kept
end
return out
"""
GCRA_MANY_SHA = hashlib.sha1(GCRA_MANY_SCRIPT.encode()).hexdigest()

# Errors that mean "Redis cannot answer now", as opposed to a bug in how we call it.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    OutOfMemoryError,
    OSError,
    asyncio.TimeoutError,
)


class RedisRateLimiter:
    """GCRA buckets in Redis, under `prefix` + key, each expiring when full again."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "mlgate:rl:",
        fail_open: bool = True,
        retry_interval: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._fail_open = fail_open
        self._retry_interval = retry_interval
        self._owns_client = owns_client
        self._healthy = True
        self._next_probe = 0.0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "mlgate:rl:",
        fail_open: bool = True,
        timeout: float = 0.25,
        retry_interval: float = 1.0,
        max_connections: int = 50,
    ) -> RedisRateLimiter:
        """A limiter with its own connection pool and short timeouts.

        The pool blocks (up to `timeout`) rather than fails when all its connections are
        busy, so a burst of concurrent requests queues instead of looking like an outage.
        One immediate retry reconnects a pooled connection that Redis dropped (a restart)
        without failing the request; more would stall requests on a dead server.
        """
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(
            Redis.from_pool(pool),
            prefix=prefix,
            fail_open=fail_open,
            retry_interval=retry_interval,
            owns_client=True,
        )

    @property
    def healthy(self) -> bool:
        """False from a failed Redis call until the next successful one."""
        return self._healthy

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        """Spend `cost` units of `key`'s bucket if they fit, atomically across processes."""
        validate_hit(key, cost)
        if not self._may_call():
            return self._unavailable(limit)
        try:
            allowed, tat, now = await self._run(self._prefix + key, limit, cost)
        except OUTAGE_ERRORS as exc:
            self._mark_down(exc)
            return self._unavailable(limit)
        self._mark_up()
        return Decision.from_state(limit, cost, bool(allowed), int(tat), int(now))

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        """Every hit's bucket in one script call, all or nothing."""
        validate_hits(hits)
        if not hits:
            return []
        if not self._may_call():
            return [self._unavailable(h.limit) for h in hits]
        keys = [self._prefix + h.key for h in hits]
        args: list[int] = []
        for h in hits:
            args += [h.limit.emission_us, h.limit.burst, h.cost]
        try:
            try:
                out = await self._client.evalsha(GCRA_MANY_SHA, len(keys), *keys, *args)
            except NoScriptError:
                out = await self._client.eval(GCRA_MANY_SCRIPT, len(keys), *keys, *args)
        except OUTAGE_ERRORS as exc:
            self._mark_down(exc)
            return [self._unavailable(h.limit) for h in hits]
        self._mark_up()
        now = int(out[0])
        return [
            Decision.from_state(h.limit, h.cost, bool(out[1 + 2 * i]), int(out[2 + 2 * i]), now)
            for i, h in enumerate(hits)
        ]

    async def check(self) -> bool:
        """PING Redis now, whatever the retry schedule; True when it answers."""
        try:
            await self._client.ping()
        except OUTAGE_ERRORS as exc:
            self._mark_down(exc)
            return False
        self._mark_up()
        return True

    async def close(self) -> None:
        """Close the connection pool if this limiter created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _run(self, key: str, limit: Limit, cost: int) -> list[int]:
        args = (limit.emission_us, limit.burst, cost)
        try:
            return await self._client.evalsha(GCRA_SHA, 1, key, *args)
        except NoScriptError:
            return await self._client.eval(GCRA_SCRIPT, 1, key, *args)

    def _may_call(self) -> bool:
        if self._healthy:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        # This request is the probe; the others keep answering without Redis meanwhile.
        self._next_probe = now + self._retry_interval
        return True

    def _unavailable(self, limit: Limit) -> Decision:
        if self._fail_open:
            return Decision.unchecked(limit)
        raise RateLimiterUnavailable(
            "rate limiting is unavailable",
            headers={"Retry-After": str(max(1, math.ceil(self._retry_interval)))},
        )

    def _mark_down(self, exc: BaseException) -> None:
        self._next_probe = time.monotonic() + self._retry_interval
        if self._healthy:
            self._healthy = False
            log.warning(
                "Redis unreachable; rate limiting fails %s until it answers again",
                "open" if self._fail_open else "closed",
                extra={"error": repr(exc)},
            )

    def _mark_up(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.info("Redis answers again; rate limiting restored")
