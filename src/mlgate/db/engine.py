"""The async engine and session factory, built from settings by the composition root."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mlgate.settings import Settings


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def build_engine(settings: Settings) -> AsyncEngine:
    """An engine for ``settings.database_url``; makes a SQLite file's directory."""
    db = settings.database
    url = settings.database_url
    kwargs: dict[str, Any] = {"echo": db.echo, "pool_pre_ping": True}
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path is not None:
            # Made private (it holds password hashes); an existing directory is left as is.
            with contextlib.suppress(FileExistsError):
                path.parent.mkdir(mode=0o700, parents=True)
        kwargs["connect_args"] = {"timeout": db.sqlite_busy_timeout_ms / 1000}
    else:
        kwargs.update(
            pool_size=db.pool_size, max_overflow=db.max_overflow, pool_timeout=db.pool_timeout_s
        )
        if db.schema_name:
            kwargs["connect_args"] = {"server_settings": {"search_path": db.schema_name}}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _configure_sqlite(engine, db.sqlite_busy_timeout_ms, in_memory=path is None)
    return engine


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, *, in_memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Foreign keys are off by default in SQLite; WAL lets readers run during a write.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (they are handed to presenters)."""
    return async_sessionmaker(engine, expire_on_commit=False)
