"""Rate limiters on every backend, a real Redis, and tools to break the connection to it.

Redis is expected at ``MLGATE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``).
When it is unreachable the Redis tests are skipped, except under CI (``CI=true``),
where a missing service is a failure.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import redis.asyncio
from fastapi import FastAPI

from mlgate.ratelimit import MemoryRateLimiter, RateLimiter
from mlgate.ratelimit.redis_backend import RedisRateLimiter
from tests.conftest import make_settings, running_app


@asynccontextmanager
async def scratch_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of one's own; its keys are deleted afterwards."""
    prefix = f"mlgate-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own in the test Redis."""
    async with scratch_prefix(redis_url) as prefix:
        yield prefix


@pytest.fixture
async def redis_limiter(redis_url: str, key_prefix: str) -> AsyncIterator[RedisRateLimiter]:
    """A fail-closed Redis limiter, so that an outage fails the test instead of passing it."""
    limiter = RedisRateLimiter.from_url(redis_url, prefix=key_prefix, fail_open=False, timeout=2)
    yield limiter
    await limiter.close()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    """Each backend in turn: the shared behaviour must not depend on the store.

    The Redis one fails closed, so that an outage fails the test instead of passing it.
    """
    if request.param == "memory":
        memory = MemoryRateLimiter()
        yield memory
        await memory.close()
        return
    url = request.getfixturevalue("redis_url")
    async with scratch_prefix(url) as prefix:
        shared = RedisRateLimiter.from_url(url, prefix=prefix, fail_open=False, timeout=2)
        yield shared
        await shared.close()


class LogRecorder(logging.Handler):
    """Collects the records of one logger, whatever the app's logging config says."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def ratelimit_log() -> Iterator[LogRecorder]:
    """Records of the ``mlgate.ratelimit`` logger during the test."""
    logger = logging.getLogger("mlgate.ratelimit")
    recorder = LogRecorder()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    yield recorder
    logger.removeHandler(recorder)
    logger.setLevel(old_level)


class TcpProxy:
    """A TCP relay to Redis that can be cut and restored, to stage an outage."""

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._db_path = target.path or "/0"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """The URL of the target Redis, reached through this proxy."""
        return f"redis://127.0.0.1:{self.port}{self._db_path}"

    async def start(self) -> None:
        """Listen (on the same port as before, after a stop)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every relayed connection."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        await self._server.wait_closed()
        self._tasks.clear()
        self._writers.clear()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


class SilentServer:
    """Accepts connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """A running :class:`TcpProxy` to the test Redis."""
    proxy = TcpProxy(redis_url)
    await proxy.start()
    yield proxy
    if proxy.running:
        await proxy.stop()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    """A running :class:`SilentServer`."""
    server = SilentServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for one backend; Redis gets a key prefix of the test's own."""
    if request.param == "memory":
        return {"rate_limit": {"enabled": True, "backend": "memory"}}
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    return {
        "redis_url": url,
        "rate_limit": {"enabled": True, "backend": "redis", "redis_key_prefix": prefix},
    }


@asynccontextmanager
async def limited_app(
    backend: dict[str, Any], *, auth: dict[str, Any] | None = None, **rate_limit: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app with rate limits on (``rate_limit`` settings added to the backend's) and,
    unless ``auth`` says otherwise, anonymous access off."""
    overrides = {**backend, "rate_limit": {**backend["rate_limit"], **rate_limit}}
    settings = make_settings(auth={"anonymous_enabled": False, **(auth or {})}, **overrides)
    async with running_app(settings) as pair:
        yield pair
