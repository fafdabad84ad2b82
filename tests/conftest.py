"""Fixtures shared by the whole suite: settings, isolated apps, HTTP clients, repositories,
and databases (a SQLite file per test; PostgreSQL in a schema of its own per test)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mlgate.api.app import create_app
from mlgate.settings import Settings, bundled_repository
from tests.servers import LiveServer, live_server_with_admin

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

POSTGRES_URL = os.environ.get(
    "MLGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# argon2 at its cheapest: the suite hashes many passwords (production keeps the defaults).
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8, "argon2_parallelism": 1}
# One random secret per test session (never a fixed one, even in tests).
TEST_JWT_SECRET = secrets.token_urlsafe(48)


#: The test Redis (database 15 by default, so a developer's data in 0 is never touched).
REDIS_URL = os.environ.get("MLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL, once it has answered a PING (skip without it, fail under CI)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {REDIS_URL} ({exc}); start redis-server"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (required under CI)", pytrace=False)
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


#: ``MLGATE_TEST_DATABASE=postgresql`` runs the tests that take the default database on
#: PostgreSQL (a fresh schema each) instead of SQLite; `make test` does both.
TEST_DATABASE = os.environ.get("MLGATE_TEST_DATABASE", "sqlite")


@pytest.fixture(autouse=True)
def _isolated_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test, and every Settings() it builds (CLI included), gets its own database:
    a SQLite file, or a PostgreSQL schema dropped afterwards."""
    for name, value in FAST_ARGON2.items():
        monkeypatch.setenv(f"MLGATE_AUTH__{name.upper()}", str(value))
    if TEST_DATABASE != "postgresql":
        monkeypatch.setenv(
            "MLGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'db' / 'mlgate.db'}"
        )
        yield
        return
    _require_postgres()
    schema = f"mlgate_test_{secrets.token_hex(6)}"
    monkeypatch.setenv("MLGATE_DATABASE_URL", POSTGRES_URL)
    monkeypatch.setenv("MLGATE_DATABASE__SCHEMA_NAME", schema)
    try:
        yield
    finally:
        _in_thread(_run_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def make_settings(**overrides: Any) -> Settings:
    """Test settings: models load before the app answers; nothing read from env files.

    Anonymous access is on (the seed clients send no credentials): pass
    ``auth={"anonymous_enabled": False}`` to test authentication itself. Rate limits are
    off (anonymous callers would share the free tier's 10 requests a minute): pass
    ``rate_limit={"enabled": True, ...}`` to test them. The heap is not frozen after
    the models load (``server={"gc_freeze": True}`` to test it).
    """
    overrides.setdefault("rate_limit", {"enabled": False})
    # No ONNX twin or manifest cache (in the user's cache directory): tests that are
    # about it give it a directory of their own.
    models = {
        "load_in_background": False,
        "twin_cache": False,
        "manifest_cache": False,
        **overrides.pop("models", {}),
    }
    auth = {
        "anonymous_enabled": True,
        "jwt_secret": TEST_JWT_SECRET,
        **FAST_ARGON2,
        **overrides.pop("auth", {}),
    }
    # One gc.collect per app start costs ~0.3 s with the bundled models: tests that are
    # about it (tests/server/test_heap.py) switch it back on.
    server = {"gc_freeze": False, **overrides.pop("server", {})}
    return Settings(**{"env": "test", **overrides}, models=models, auth=auth, server=server)


async def create_admin_key(app: FastAPI, username: str = "test-admin") -> str:
    """A new admin user and API key in a running app's database; returns the key."""
    accounts = app.state.mlgate.accounts
    user = await accounts.create_user(username, password=None, scopes=["admin"])
    return str((await accounts.create_key(user.id, name="tests")).plaintext)


@asynccontextmanager
async def running_app(
    settings: Settings, *, as_admin: bool = False
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app with its lifespan entered and a client talking to it in-process
    (``as_admin``: the client sends an admin API key)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlgate.test") as client:
            if as_admin:
                client.headers["X-API-Key"] = await create_admin_key(app)
            yield app, client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app serving the bundled models with default settings."""
    async with running_app(make_settings()) as (_, c):
        yield c


@pytest.fixture
def app_factory() -> Callable[..., Any]:
    """``async with app_factory(**settings) as (app, client)`` for custom settings."""

    def factory(**overrides: Any) -> Any:
        return running_app(make_settings(**overrides))

    return factory


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    """A writable copy of the bundled model repository."""
    target = tmp_path / "models"
    shutil.copytree(bundled_repository(), target)
    return target


def _in_thread(coro: Any) -> Any:
    # A loop of its own in another thread: usable from sync and async tests alike.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _postgres_problem() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


_postgres_checked: list[str | None] = []


def _require_postgres() -> None:
    if not _postgres_checked:
        _postgres_checked.append(_in_thread(_postgres_problem()))
    problem = _postgres_checked[0]
    if problem is not None:
        reason = f"PostgreSQL at {POSTGRES_URL} does not answer ({problem})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)


async def _run_sql(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings overrides for an empty database: SQLite, then PostgreSQL (a fresh schema,
    dropped afterwards). The same tests run on both."""
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'auth' / 'mlgate.db'}"}
        return
    with postgres_schema() as schema:
        yield {"database_url": POSTGRES_URL, "database": {"schema_name": schema}}


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The name of a fresh schema on the test PostgreSQL (skips without it, fails under
    CI), dropped afterwards; whoever connects first creates it (mlgate migrates it)."""
    _require_postgres()
    schema = f"mlgate_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        _in_thread(_run_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def database_env(database: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``database``, also put in the environment for the CLI's own Settings()."""
    monkeypatch.setenv("MLGATE_DATABASE_URL", database["database_url"])
    schema = database.get("database", {}).get("schema_name")
    if schema:
        monkeypatch.setenv("MLGATE_DATABASE__SCHEMA_NAME", schema)
    return database


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real `mlgate serve` (the ids and iot models, SQLite, an admin key) shared by
    the tests that need a server process but no settings of their own: the dashboard in
    Chromium, the Dockerfile's health check."""
    with live_server_with_admin(tmp_path_factory.mktemp("live"), ["ids", "iot"]) as server:
        yield server
