"""Where audit rows go: the database, in as few statements as possible.

- SQLite: one multi-row ``INSERT OR IGNORE ... VALUES (...), (...), ...`` per chunk (as
  many rows as SQLite's 32,766 bound parameters allow), in one transaction.
- PostgreSQL: ``COPY ... FROM STDIN`` (binary, through asyncpg), which measured faster
  than one multi-row ``INSERT`` (see the README's audit section). If the batch was
  already written - a commit whose acknowledgement was lost, retried - COPY hits the
  primary key and the batch is written again with ``INSERT ... ON CONFLICT DO NOTHING``,
  so a retry never duplicates nor fails forever.

Rows are tuples in :data:`~mlgate.audit.records.COLUMNS` order, with JSON columns
already encoded; bypassing the ORM's per-value processing is what makes this cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.records import COLUMNS, Row

TABLE = "predictions"
# SQLite's default SQLITE_MAX_VARIABLE_NUMBER (3.32+) and PostgreSQL's 32,767 Bind limit.
_MAX_PARAMETERS = 32_766
_CREATED_AT = COLUMNS.index("created_at")


class InvalidRows(Exception):
    """The database refused rows as invalid (retrying the same rows cannot help)."""


class AuditSink(Protocol):
    """Stores audit rows; raises :class:`InvalidRows` for rows the database refuses as
    invalid and anything else when it could not write (the caller keeps them, retries)."""

    async def write(self, rows: Sequence[Row]) -> None: ...


def _chunks(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


class SqlAuditSink:
    """Writes audit rows with one statement per chunk (COPY on PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, use_copy: bool = True) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.use_copy = use_copy and self.dialect == "postgresql"
        self.chunk_rows = _MAX_PARAMETERS // len(COLUMNS)
        self._sql: dict[tuple[int, str], str] = {}

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        try:
            if self.dialect == "sqlite":
                await self._insert_sqlite(rows)
            elif self.use_copy:
                await self._copy_postgres(rows)
            else:
                await self._insert_postgres(rows)
        except (DataError, IntegrityError) as exc:
            raise InvalidRows(str(exc)) from exc
        except Exception as exc:
            if _is_invalid_data(exc):
                raise InvalidRows(str(exc)) from exc
            raise

    # -- SQLite -----------------------------------------------------------------------------

    def _statement(self, n: int, placeholder: str) -> str:
        sql = self._sql.get((n, placeholder))
        if sql is None:
            columns = ", ".join(COLUMNS)
            if placeholder == "?":
                one = "(" + ", ".join("?" * len(COLUMNS)) + ")"
                values = ", ".join([one] * n)
                sql = f"INSERT OR IGNORE INTO {TABLE} ({columns}) VALUES {values}"
            else:
                width = len(COLUMNS)
                values = ", ".join(
                    "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                    for r in range(n)
                )
                sql = (
                    f"INSERT INTO {TABLE} ({columns}) VALUES {values} "
                    "ON CONFLICT (request_key, row_index, shadow) DO NOTHING"
                )
            self._sql[(n, placeholder)] = sql
        return sql

    async def _insert_sqlite(self, rows: Sequence[Row]) -> None:
        async with self.engine.begin() as conn:
            for chunk in _chunks(rows, self.chunk_rows):
                params: list[Any] = []
                for row in chunk:
                    params.extend(row)
                # The format SQLAlchemy's SQLite DateTime reads back (naive UTC text):
                # sqlite3's own datetime adapter is deprecated.
                for i in range(_CREATED_AT, len(params), len(COLUMNS)):
                    params[i] = _sqlite_time(params[i])
                await conn.exec_driver_sql(self._statement(len(chunk), "?"), tuple(params))

    # -- PostgreSQL -------------------------------------------------------------------------

    async def _copy_postgres(self, rows: Sequence[Row]) -> None:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                async with driver.transaction():
                    await driver.copy_records_to_table(TABLE, records=rows, columns=COLUMNS)
            except asyncpg.UniqueViolationError:
                # Some rows are there already (a retried batch): insert what is missing.
                async with driver.transaction():
                    for chunk in _chunks(rows, self.chunk_rows):
                        await driver.execute(
                            self._statement(len(chunk), "$"), *[v for row in chunk for v in row]
                        )

    async def _insert_postgres(self, rows: Sequence[Row]) -> None:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            async with driver.transaction():
                for chunk in _chunks(rows, self.chunk_rows):
                    await driver.execute(
                        self._statement(len(chunk), "$"), *[v for row in chunk for v in row]
                    )


def _sqlite_time(value: datetime) -> str:
    """An aware UTC datetime as SQLAlchemy's SQLite DateTime stores it (naive UTC text)."""
    return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _is_invalid_data(exc: BaseException) -> bool:
    """asyncpg's own errors for rows PostgreSQL refuses (class 22 data exceptions,
    class 23 integrity violations), raised by the driver calls made here directly."""
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError)
