"""Verified principals, cached per worker for a bounded time.

Checking an API key or an access token against the database costs a round trip per
request; a worker instead keeps what it verified for ``ttl_s`` seconds (never past the
key's or token's own expiry). Anything that narrows an account - a revoked key, a
disabled user, fewer scopes, revoked sessions, a new password - clears the cache:

- at once on the worker that made the change, and on every worker when Redis is
  configured (:class:`AccountChanges` publishes on a channel every worker listens to);
- otherwise within ``ttl_s`` (a CLI command, or another worker without Redis).

Keys are a digest of the credential, so the cache never holds a secret it could leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mlgate.auth.principal import Principal

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("mlgate.auth")

CHANNEL = "mlgate:auth:changes"


def _digest(credential: str) -> bytes:
    return hashlib.blake2b(credential.encode(), digest_size=16).digest()


class PrincipalCache:
    """Credential digest -> (principal, monotonic deadline); least recently used go first."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, credential: str) -> Principal | None:
        """The cached principal of ``credential``, if still fresh."""
        if not self.enabled:
            return None
        key = _digest(credential)
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, credential: str, principal: Principal, expires_at: float | None = None) -> None:
        """Keep ``principal`` for ``ttl_s`` seconds, or until ``expires_at`` (a wall-clock
        timestamp: the key's or token's expiry) if that is sooner."""
        if not self.enabled:
            return
        ttl = self.ttl_s
        if expires_at is not None:
            ttl = min(ttl, expires_at - time.time())
            if ttl <= 0:
                return
        key = _digest(credential)
        self._entries[key] = (principal, time.monotonic() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


Listener = Callable[[], None]


class AccountChanges:
    """Tells every cache that some account was narrowed: local listeners at once, and
    (with Redis) every other process through a pub/sub channel."""

    def __init__(self, redis: Redis | None = None, channel: str = CHANNEL) -> None:
        self._redis = redis
        self._channel = channel
        self._listeners: list[Listener] = []
        self.listening = asyncio.Event()
        """Set while this process hears other processes' announcements."""

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify_local(self) -> None:
        for listener in self._listeners:
            listener()

    async def publish(self) -> None:
        """An account changed: clear here, then tell the other processes (best effort:
        without Redis, or while it is away, they catch up within the cache's TTL)."""
        self._notify_local()
        if self._redis is None:
            return
        try:
            await self._redis.publish(self._channel, b"changed")
        except Exception as exc:
            log.warning("could not announce an account change", extra={"error": repr(exc)})

    async def listen(self) -> None:
        """Clear local caches on every announcement (run as a task; reconnects by itself,
        and clears on reconnect since announcements may have been missed meanwhile)."""
        if self._redis is None:
            return
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._notify_local()
                self.listening.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._notify_local()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning("account-change channel lost; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def account_changes(redis_url: str | None) -> AccountChanges:
    """Announcements over Redis when it is configured, else local only."""
    if not redis_url:
        return AccountChanges()
    from redis.asyncio import Redis

    return AccountChanges(Redis.from_url(redis_url, socket_connect_timeout=1.0))


async def no_change() -> None:
    """For callers without caches to clear."""


ChangeHook = Callable[[], Awaitable[None]]
