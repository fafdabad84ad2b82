"""Whether the database can take the writes this server makes (for readiness).

``SELECT 1`` answers even when the SQLite file was deleted (a pooled connection still
reads the unlinked file) or is read-only, while every revocation then fails or is lost.
The probe therefore writes where the server writes: an ``UPDATE`` of ``api_keys`` that
matches no row, in a transaction that is rolled back. It takes the write lock (SQLite)
or checks the transaction may write (PostgreSQL: a read-only replica refuses it) and
needs the table to exist, yet changes nothing and writes nothing to disk: unlike a
heartbeat table, frequent probes from every worker cost no disk writes and no migration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("mlgate.db")

DatabaseStatus = Literal["ok", "busy", "missing", "read_only", "down"]

# Statuses a worker still serves under: ``busy`` is SQLite's lock held by another writer
# (a backup, a long migration, a bulk audit flush); writes wait and are retried.
SERVING: frozenset[DatabaseStatus] = frozenset({"ok", "busy"})

PROBLEMS: dict[DatabaseStatus, str] = {
    "missing": "the database file is missing: nothing can be read or stored",
    "read_only": "the database is read-only: revocations and other changes cannot be stored",
    "down": "the database does not answer or cannot be written",
}

_WRITE_PROBE = text("UPDATE api_keys SET last_used_at = last_used_at WHERE id = -1")


def _missing(path: Path) -> bool:
    # One stat: cheaper than handing it to a thread.
    return not os.path.exists(path)


async def database_status(
    engine: AsyncEngine, sqlite_file: Path | None, *, timeout_s: float = 2.0
) -> DatabaseStatus:
    """``ok`` when a write would succeed, ``busy`` when it would wait for SQLite's lock;
    otherwise why not."""
    if sqlite_file is not None and _missing(sqlite_file):
        return "missing"
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as connection:
            transaction = await connection.begin()
            try:
                await connection.execute(_WRITE_PROBE)
            finally:
                await transaction.rollback()
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
        log.warning("readiness: the database cannot be written", extra={"db_error": reason})
        lowered = reason.lower()
        if "database is locked" in lowered or "database is busy" in lowered:
            return "busy"
        return "read_only" if "readonly" in lowered or "read-only" in lowered else "down"
    return "ok"
