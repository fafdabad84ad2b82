"""The prediction cache in Redis, shared by every worker and replica (imported only
when the cache is configured to use it: redis-py takes ~0.05 s to import)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mlgate.cache.backends import pack, unpack

log = logging.getLogger("mlgate.cache")


class RedisCache:
    """Entries in Redis under ``prefix + namespace + ":" + digest``, expiring by TTL.

    A version that stops serving is not cleaned up here: its namespace carries the
    version's load identity, so nothing asks for those keys again and they expire.
    Errors and timeouts are misses; after one, Redis is left alone for
    ``retry_interval`` seconds so a dead server costs requests nothing.
    """

    name = "redis"

    def __init__(
        self, client: Redis, *, prefix: str, retry_interval: float, owns_client: bool = False
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._retry_interval = retry_interval
        self._owns_client = owns_client
        self._down_until = 0.0
        self.errors = 0

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, timeout: float, retry_interval: float
    ) -> RedisCache:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=50,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(
            Redis.from_pool(pool), prefix=prefix, retry_interval=retry_interval, owns_client=True
        )

    def _key(self, namespace: str, digest: str) -> str:
        return f"{self._prefix}{namespace}:{digest}"

    async def get(self, namespace: str, digest: str) -> np.ndarray | None:
        if self._down_until and time.monotonic() < self._down_until:
            return None
        try:
            blob = await self._client.get(self._key(namespace, digest))
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._down_until = 0.0
        return unpack(blob) if isinstance(blob, bytes) and blob else None

    async def put(self, namespace: str, digest: str, value: np.ndarray, ttl_s: float) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            return
        try:
            await self._client.set(
                self._key(namespace, digest), pack(value), px=max(1, int(ttl_s * 1000))
            )
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self._down_until:
            log.warning("prediction cache: Redis unreachable, serving without it", exc_info=exc)
        self._down_until = time.monotonic() + self._retry_interval

    def drop_namespace(self, namespace: str) -> None:
        """Nothing to do: the namespace is unreachable once its version is gone."""

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, "errors": self.errors, "healthy": not self._down_until}

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
