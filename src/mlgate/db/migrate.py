"""Schema migrations (Alembic, shipped in the package), applied programmatically.

Several workers may start at once: on PostgreSQL an advisory lock, on SQLite a lock
file beside the database, makes one of them migrate while the others wait and then
find nothing to do.

A database already at :data:`HEAD_REVISION` is recognised with one plain query, without
importing Alembic (and the template engine it brings): that is every start but the first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mlgate.db.engine import safe_url, sqlite_path
from mlgate.errors import BadRequest, SchemaTooNew

if TYPE_CHECKING:
    from alembic.config import Config

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process migrates at a time anyway
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("mlgate.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# An arbitrary constant: the key of the PostgreSQL advisory lock taken while migrating.
_PG_LOCK_KEY = 0x6D6C67617465
#: The newest migration under migrations/versions (a test checks it is Alembic's head).
HEAD_REVISION = "0007"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration shipped with this version of mlgate (as Alembic finds it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: not migrated yet)."""
    async with engine.connect() as conn:
        return await _revision(conn)


async def upgrade(
    engine: AsyncEngine, *, schema: str | None = None, revision: str = "head"
) -> str | None:
    """Bring the database to ``revision``; returns the revision it ends at.
    :class:`~mlgate.errors.SchemaTooNew` when a newer mlgate migrated it."""
    stored = await _stored_revision(engine)
    if revision == "head" and stored == HEAD_REVISION:
        return HEAD_REVISION
    check_known(stored)
    from alembic import command

    return await _run(
        engine, lambda sync: command.upgrade(alembic_config(sync), revision), "migrated", schema
    )


async def _run(
    engine: AsyncEngine, step: Callable[[Connection], None], done: str, schema: str | None = None
) -> str | None:
    """Run an Alembic ``step`` under the migration lock (a file lock beside a SQLite
    database, an advisory lock on PostgreSQL); log ``database <done>`` when the revision
    moved; returns the revision it ends at."""
    async with _sqlite_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            if schema:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        before = await _revision(conn)
        await conn.run_sync(step)
        after = await _revision(conn)
    if after != before:
        log.info(
            f"database {done}",
            extra={"database": safe_url(str(engine.url)), "from": before, "to": after},
        )
    return after


def known_revisions() -> frozenset[str]:
    """Every revision this version of mlgate ships."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(r.revision for r in script.walk_revisions())


def check_known(revision: str | None) -> None:
    """SchemaTooNew unless ``revision`` (None: not migrated) is one this mlgate ships."""
    if revision is None or revision in known_revisions():
        return
    head = head_revision()
    raise SchemaTooNew(
        f"the database is at schema revision {revision}, which this mlgate (newest "
        f"revision {head}) does not ship: a newer mlgate migrated it. Run that version, "
        f"or downgrade the database with it first (`mlgate db downgrade {head}`)",
        details={"database_revision": revision, "newest_shipped": head},
    )


async def check_schema(engine: AsyncEngine) -> None:
    """SchemaTooNew when a newer mlgate migrated the database (one plain query; for a
    server that does not migrate on start)."""
    stored = await _stored_revision(engine)
    if stored != HEAD_REVISION:
        check_known(stored)


async def downgrade(engine: AsyncEngine, *, revision: str) -> str | None:
    """Take the database back to ``revision`` (the migrations' own downgrade steps);
    returns the revision it ends at."""
    from alembic import command
    from alembic.util.exc import CommandError

    check_known(await _stored_revision(engine))

    def step(sync: Connection) -> None:
        try:
            command.downgrade(alembic_config(sync), revision)
        except CommandError as exc:  # no such revision, or not below the current one
            raise BadRequest(f"cannot downgrade to {revision!r}: {exc}") from None

    return await _run(engine, step, "downgraded")


async def _revision(conn: AsyncConnection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def _stored_revision(engine: AsyncEngine) -> str | None:
    """The revision in ``alembic_version``, read with plain SQL; None when there is no
    such table (a new database), no single row, or it cannot be read (Alembic decides)."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except SQLAlchemyError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


@contextlib.asynccontextmanager
async def _sqlite_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    path = sqlite_path(str(engine.url)) if engine.dialect.name == "sqlite" else None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
