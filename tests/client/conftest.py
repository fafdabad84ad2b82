"""The client against an app served in-process.

The app runs its lifespan on an event loop of its own in a background thread, so the
blocking :class:`~mlgate.client.Client` (whose transport cannot await) and the
:class:`~mlgate.client.AsyncClient` reach the same app, each through a transport that
hands the request to ``httpx.ASGITransport`` on that loop. A recording transport keeps
what was sent and answered, to count requests, rows and retries.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.conftest import create_admin_key, make_settings

from mlgate.api.app import create_app
from mlgate.client import AsyncClient, Client, RetryPolicy
from mlgate.settings import Settings

BASE_URL = "http://mlgate.test"
#: Retries without real waiting, for tests of what is retried (not of how long).
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base_s=0.001, backoff_max_s=0.002)


@dataclass
class InProcessServer:
    """An app with its lifespan entered, on a loop in a background thread."""

    app: FastAPI
    loop: asyncio.AbstractEventLoop
    admin_key: str

    def run(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the app's loop (e.g. to use its services directly)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextmanager
def serve_in_thread(settings: Settings, admin: str = "test-admin") -> Iterator[InProcessServer]:
    """``settings``' app served on a background loop until the block ends, with a new
    admin user ``admin`` and its key."""
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="mlgate-app", daemon=True)
    thread.start()
    ready: Future[str] = Future()
    stop = asyncio.Event()

    async def lifetime() -> None:
        # Enter and leave the lifespan in one task (its cancel scopes require it).
        try:
            async with app.router.lifespan_context(app):
                ready.set_result(await create_admin_key(app, admin))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    task = asyncio.run_coroutine_threadsafe(lifetime(), loop)
    try:
        yield InProcessServer(app, loop, ready.result(60))
    finally:
        loop.call_soon_threadsafe(stop.set)
        try:
            task.result(60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _forward(
    asgi: httpx.ASGITransport, request: httpx.Request, body: bytes
) -> httpx.Response:
    copy = httpx.Request(request.method, request.url, headers=request.headers, content=body)
    response = await asgi.handle_async_request(copy)
    content = await response.aread()
    return httpx.Response(response.status_code, headers=response.headers, content=content)


class BridgeTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` on the server's loop, usable from any thread or loop."""

    def __init__(self, server: InProcessServer) -> None:
        self.server = server
        self.asgi = httpx.ASGITransport(app=server.app, raise_app_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        return self.server.run(_forward(self.asgi, request, body))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        future = asyncio.run_coroutine_threadsafe(
            _forward(self.asgi, request, body), self.server.loop
        )
        return await asyncio.wrap_future(future)


@dataclass(frozen=True)
class Exchange:
    """One request the client sent and what came back."""

    method: str
    path: str
    query: str
    status: int | None
    """None: the transport failed (no answer)."""
    rows: int | None
    sent_at: float
    headers: dict[str, str]


def rows_of(request: httpx.Request) -> int | None:
    """Rows in a prediction request: v1 ``instances``, or the OIP tensor's first dim."""
    body = request.content
    if request.url.path.endswith("/predict/batch"):
        return len(json.loads(body)["instances"])
    if request.url.path.endswith("/infer"):
        length = int(request.headers.get("inference-header-content-length", len(body)))
        return int(json.loads(body[:length])["inputs"][0]["shape"][0])
    return None


@dataclass
class Recorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Wraps a transport and records every exchange (thread-safe)."""

    inner: Any
    log: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, request: httpx.Request, status: int | None, at: float) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        exchange = Exchange(
            request.method,
            request.url.path,
            request.url.query.decode(),
            status,
            rows_of(request),
            at,
            headers,
        )
        with self.lock:
            self.log.append(exchange)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        at = time.monotonic()
        request.read()
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError:
            self._record(request, None, at)
            raise
        self._record(request, response.status_code, at)
        return response  # type: ignore[no-any-return]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        at = time.monotonic()
        await request.aread()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError:
            self._record(request, None, at)
            raise
        self._record(request, response.status_code, at)
        return response  # type: ignore[no-any-return]

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()

    async def aclose(self) -> None:
        if hasattr(self.inner, "aclose"):
            await self.inner.aclose()

    def paths(self, method: str | None = None) -> list[str]:
        return [e.path for e in self.log if method is None or e.method == method]

    def to(self, suffix: str) -> list[Exchange]:
        """The exchanges whose path ends with ``suffix``."""
        return [e for e in self.log if e.path.endswith(suffix)]


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'mlgate.db'}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """One app for a module's tests (bundled models; batches of at most 100 rows). Its
    database is its own (module fixtures start before the per-test database)."""
    settings = make_settings(
        database_url=sqlite_url(tmp_path_factory.mktemp("client-db")),
        models={"max_batch_rows": 100},
    )
    with serve_in_thread(settings) as running:
        yield running


@pytest.fixture
def recorder(server: InProcessServer) -> Recorder:
    return Recorder(BridgeTransport(server))


@pytest.fixture
def client(server: InProcessServer, recorder: Recorder) -> Iterator[Client]:
    """A blocking client with the admin key, recording what it sends."""
    with Client(BASE_URL, api_key=server.admin_key, transport=recorder) as c:
        yield c


@pytest.fixture
async def aclient(server: InProcessServer, recorder: Recorder) -> Any:
    """An asyncio client with the admin key, recording what it sends."""
    async with AsyncClient(BASE_URL, api_key=server.admin_key, transport=recorder) as c:
        yield c
