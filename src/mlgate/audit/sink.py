"""Where audit rows go: the database, in as few statements as possible.

- SQLite: ``executemany`` of one multi-row ``INSERT ... VALUES (...), ... ON CONFLICT
  DO NOTHING`` of :data:`SQLITE_ROWS_PER_STATEMENT` rows, and of a one-row one for the
  rest, in one transaction: two statements per table whatever the batch size.
- PostgreSQL: ``COPY ... FROM STDIN`` (binary, through asyncpg). Measured for batches of
  2,000 rows: COPY ~25,000-38,000 rows/s, one multi-row ``INSERT`` ~3,000-5,000 rows/s
  (each new statement of thousands of parameters is parsed and planned), asyncpg's
  ``executemany`` ~9,000-16,000 rows/s. If the batch was already written - a commit
  whose acknowledgement was lost, retried - COPY hits the primary key and the batch is
  written again with ``INSERT ... ON CONFLICT DO NOTHING``, so a retry never duplicates
  nor fails forever.

Rows are tuples in :data:`~mlgate.audit.records.COLUMNS` order, with JSON columns
already encoded; bypassing the ORM's per-value processing is what makes this cheap. A
batch goes to two tables in one transaction: each request's shared columns once to
``prediction_requests`` (from any of its rows: they are equal), each row's own columns
to ``prediction_rows`` (both split off the rows with ``itemgetter``, in C).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any, Protocol

import asyncpg
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.records import COLUMNS, Row

REQUESTS = "prediction_requests"
ROWS = "prediction_rows"
# What a request's rows share: its key and shadow flag, and COLUMNS from created_at to
# cache_hit (the columns of records._head).
REQUEST_COLUMNS: tuple[str, ...] = (
    "request_key",
    "shadow",
    *COLUMNS[COLUMNS.index("created_at") : COLUMNS.index("input_hash")],
)
ROW_COLUMNS: tuple[str, ...] = tuple(
    c for c in COLUMNS if c not in REQUEST_COLUMNS or c in ("request_key", "shadow")
)
_REQUEST_OF = itemgetter(*(COLUMNS.index(c) for c in REQUEST_COLUMNS))
_ROW_OF = itemgetter(*(COLUMNS.index(c) for c in ROW_COLUMNS))
_REQUEST_KEY = itemgetter(COLUMNS.index("request_key"), COLUMNS.index("shadow"))
_CONFLICT = {
    REQUESTS: "ON CONFLICT (request_key, shadow) DO NOTHING",
    ROWS: "ON CONFLICT (request_key, row_index, shadow) DO NOTHING",
}
_CREATED_AT = REQUEST_COLUMNS.index("created_at")


#: Rows per multi-row INSERT on SQLite. A batch is written as ``executemany`` of one
#: statement of this many rows (one trip to the driver's thread, one compiled statement)
#: and ``executemany`` of a one-row statement for the rest. A statement per batch size,
#: as before, made SQLite compile a statement of thousands of placeholders for every new
#: size and kept up to 128 of them per connection: +211 MiB over 150 batches of random
#: sizes, and ~3 KB more RSS per request under W1. Measured on 150 batches of 1-2,000
#: rows: 9.65 -> 6.09 µs of CPU per row; batches of 2,000: 5.27 -> 5.16.
SQLITE_ROWS_PER_STATEMENT = 128


def split(rows: Sequence[Row]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The request records (one per request key and shadow flag) and the row records of
    audit rows."""
    heads = dict(zip(map(_REQUEST_KEY, rows), rows, strict=True))
    return list(map(_REQUEST_OF, heads.values())), list(map(_ROW_OF, rows))


class InvalidRows(Exception):
    """The database refused rows as invalid (retrying the same rows cannot help)."""


class AuditSink(Protocol):
    """Stores audit rows; raises :class:`InvalidRows` for rows the database refuses as
    invalid and anything else when it could not write (the caller keeps them, retries)."""

    async def write(self, rows: Sequence[Row]) -> None: ...


class SqlAuditSink:
    """Writes audit rows with one statement per chunk and table (COPY on PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sqlite_sql: dict[tuple[str, int], str] = {}
        self._pg_insert = {
            table: (
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))}) "
                + _CONFLICT[table]
            )
            for table, columns in ((REQUESTS, REQUEST_COLUMNS), (ROWS, ROW_COLUMNS))
        }

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        requests, records = split(rows)
        try:
            if self.dialect == "sqlite":
                await self._insert_sqlite(requests, records)
            else:
                await self._copy_postgres(requests, records)
        except (DataError, IntegrityError) as exc:
            raise InvalidRows(str(exc)) from exc
        except Exception as exc:
            if _is_invalid_data(exc):
                raise InvalidRows(str(exc)) from exc
            raise

    # -- SQLite -----------------------------------------------------------------------------

    def _sqlite_statement(self, table: str, n: int) -> str:
        sql = self._sqlite_sql.get((table, n))
        if sql is None:
            columns = REQUEST_COLUMNS if table == REQUESTS else ROW_COLUMNS
            one = "(" + ", ".join("?" * len(columns)) + ")"
            # ON CONFLICT on the key only: OR IGNORE would also skip rows that break NOT
            # NULL, silently.
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * n)} "
                + _CONFLICT[table]
            )
            self._sqlite_sql[(table, n)] = sql
        return sql

    async def _insert_sqlite(
        self, requests: list[tuple[Any, ...]], records: list[tuple[Any, ...]]
    ) -> None:
        # The format SQLAlchemy's SQLite DateTime reads back (naive UTC text): sqlite3's
        # own datetime adapter is deprecated.
        requests = [
            (*r[:_CREATED_AT], _sqlite_time(r[_CREATED_AT]), *r[_CREATED_AT + 1 :])
            for r in requests
        ]
        k = SQLITE_ROWS_PER_STATEMENT
        async with self.engine.begin() as conn:
            for table, items in ((REQUESTS, requests), (ROWS, records)):
                whole = len(items) // k * k
                if whole:
                    groups = [
                        tuple(chain.from_iterable(items[i : i + k])) for i in range(0, whole, k)
                    ]
                    await conn.exec_driver_sql(self._sqlite_statement(table, k), groups)
                if whole < len(items):
                    rest = items[whole:]
                    await conn.exec_driver_sql(self._sqlite_statement(table, 1), rest)

    # -- PostgreSQL -------------------------------------------------------------------------

    async def _copy_postgres(
        self, requests: list[tuple[Any, ...]], records: list[tuple[Any, ...]]
    ) -> None:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                async with driver.transaction():
                    await driver.copy_records_to_table(
                        REQUESTS, records=requests, columns=REQUEST_COLUMNS
                    )
                    await driver.copy_records_to_table(ROWS, records=records, columns=ROW_COLUMNS)
            except asyncpg.UniqueViolationError:
                # Some are there already (a retried batch): insert what is missing.
                async with driver.transaction():
                    await driver.executemany(self._pg_insert[REQUESTS], requests)
                    await driver.executemany(self._pg_insert[ROWS], records)


def _sqlite_time(value: datetime) -> str:
    """An aware UTC datetime as SQLAlchemy's SQLite DateTime stores it (naive UTC text)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")  # 2x strftime's speed


def _is_invalid_data(exc: BaseException) -> bool:
    """asyncpg's own errors for rows PostgreSQL refuses (class 22 data exceptions,
    class 23 integrity violations), raised by the driver calls made here directly."""
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError)
