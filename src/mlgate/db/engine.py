"""The async engine and session factory, built from settings by the composition root.

A SQLite database file is created private (0600, it holds password and key hashes),
opened in ``mode=rw`` so that a file deleted under a running server is not silently
re-created empty, and every pooled connection is checked out only while the file it
opened is still the one at the path (a connection to a deleted file would accept writes
that are lost).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
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
    if database.startswith("file:"):  # a SQLite URI (as build_engine opens files)
        if "mode=memory" in database or parsed.query.get("mode") == "memory":
            return None
        return Path(unquote(urlsplit(database).path))
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
            _create_private(path)
            url = _read_write_uri(url, path)
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
        if path is not None:
            _check_file_on_checkout(engine, path)
    return engine


def _create_private(path: Path) -> None:
    """Create the directory (0700) and the database file (0600) when they are missing;
    SQLite itself would create the file with the umask's mode (0644), readable by all
    when the directory already existed. Existing files and directories are left as is."""
    with contextlib.suppress(FileExistsError):
        path.parent.mkdir(mode=0o700, parents=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _read_write_uri(url: str, path: Path) -> str:
    """The URL as a SQLite URI in mode=rw: open an existing file, never create one (its
    -wal and -shm files take the file's mode)."""
    parsed = make_url(url)
    uri = parsed.set(
        database=path.absolute().as_uri(), query={**parsed.query, "mode": "rw", "uri": "true"}
    )
    return uri.render_as_string(hide_password=False)


def _file_identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _check_file_on_checkout(engine: AsyncEngine, path: Path) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _remember_file(_dbapi_connection: Any, record: Any) -> None:
        with contextlib.suppress(OSError):
            record.info["sqlite_file"] = _file_identity(path)

    @event.listens_for(engine.sync_engine, "checkout")
    def _same_file(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # One stat per checkout. A mismatch makes the pool drop this connection and open
        # a new one, which fails (mode=rw) if the file is gone: the caller gets an error
        # (a 503), not a write into a deleted file.
        try:
            current = _file_identity(path)
        except OSError:
            current = None
        if current != record.info.get("sqlite_file"):
            raise DisconnectionError(
                f"the SQLite database file {path.name} was removed or replaced"
            )


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


def dialect_insert(dialect: str) -> Any:
    """The ``insert`` construct of the dialect named ``dialect`` (``postgresql`` or
    ``sqlite``), for its ``ON CONFLICT`` upserts. Imported when first asked for, so a
    server on SQLite never imports the PostgreSQL dialect (and asyncpg)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert
