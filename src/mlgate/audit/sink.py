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
batch goes to three tables in one transaction: each request's shared columns once to
``prediction_requests`` (from any of its rows: they are equal); the rows of a one-row
request to ``prediction_rows``; those of a request of several rows as one record of
``prediction_row_blocks`` (their own columns as one JSON array of arrays). Measured on
SQLite for 1,000-row requests: ~5 µs of CPU per row as rows, ~0.3 µs as a block.

A request is the unit of writing: its rows come in one batch (the writer never splits
one), so each request is stored in one place and a batch written twice is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import chain, groupby
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import asyncpg
import orjson
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.records import COLUMNS, JSON_COLUMNS, Row

REQUESTS = "prediction_requests"
ROWS = "prediction_rows"
BLOCKS = "prediction_row_blocks"
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
#: A block: a run of one request's rows, their columns from input_hash on as JSON.
BLOCK_COLUMNS: tuple[str, ...] = ("request_key", "shadow", "first_row", "rows", "data")
_BLOCK_CELLS = COLUMNS.index("input_hash")
# Where the JSON columns are in a row record (encoded there one row at a time).
_ROW_JSON = tuple(i for i, c in enumerate(ROW_COLUMNS) if c in JSON_COLUMNS)
_ROW_INDEX = COLUMNS.index("row_index")
_REQUEST_OF = itemgetter(*(COLUMNS.index(c) for c in REQUEST_COLUMNS))
_ROW_OF = itemgetter(*(COLUMNS.index(c) for c in ROW_COLUMNS))
_REQUEST_KEY = itemgetter(COLUMNS.index("request_key"), COLUMNS.index("shadow"))
_CONFLICT = {
    REQUESTS: "ON CONFLICT (request_key, shadow) DO NOTHING",
    ROWS: "ON CONFLICT (request_key, row_index, shadow) DO NOTHING",
    BLOCKS: "ON CONFLICT (request_key, shadow, first_row) DO NOTHING",
}
_COLUMNS_OF = {REQUESTS: REQUEST_COLUMNS, ROWS: ROW_COLUMNS, BLOCKS: BLOCK_COLUMNS}
_CREATED_AT = REQUEST_COLUMNS.index("created_at")


#: Rows per multi-row INSERT on SQLite. A batch is written as ``executemany`` of one
#: statement of this many rows (one trip to the driver's thread, one compiled statement)
#: and ``executemany`` of a one-row statement for the rest. A statement per batch size,
#: as before, made SQLite compile a statement of thousands of placeholders for every new
#: size and kept up to 128 of them per connection: +211 MiB over 150 batches of random
#: sizes, and ~3 KB more RSS per request under W1. Measured on 150 batches of 1-2,000
#: rows: 9.65 -> 6.09 µs of CPU per row; batches of 2,000: 5.27 -> 5.16.
SQLITE_ROWS_PER_STATEMENT = 128


class Records(NamedTuple):
    """One batch of audit rows as the records of the three tables."""

    requests: list[tuple[Any, ...]]
    rows: list[tuple[Any, ...]]
    blocks: list[tuple[Any, ...]]


def split(rows: Sequence[Row]) -> Records:
    """The request records (one per request key and shadow flag), the row records of
    one-row requests and the blocks of the others (a block per run of consecutive rows
    of a request: one per request, as the writer batches them)."""
    requests: list[tuple[Any, ...]] = []
    singles: list[Row] = []
    blocks: list[tuple[Any, ...]] = []
    for key, group in groupby(rows, _REQUEST_KEY):
        run = list(group)
        requests.append(_REQUEST_OF(run[0]))
        if len(run) == 1:
            singles.append(run[0])
            continue
        start = 0
        for i in range(1, len(run) + 1):
            if i == len(run) or run[i][_ROW_INDEX] != run[i - 1][_ROW_INDEX] + 1:
                if i - start == 1:  # a lone row (never from the writer)
                    singles.append(run[start])
                else:
                    blocks.append(_block(key, run[start:i]))
                start = i
    # A request's rows apart in the batch (never from the writer): one request record.
    if len(requests) > 1 and len({r[:2] for r in requests}) < len(requests):
        requests = list({r[:2]: r for r in requests}.values())
    return Records(requests, [_encoded(_ROW_OF(row)) for row in singles], blocks)


def _encoded(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row record with its JSON columns as JSON text."""
    cells = list(record)
    for i in _ROW_JSON:
        if cells[i] is not None:
            cells[i] = orjson.dumps(cells[i]).decode()
    return tuple(cells)


def request_starts(rows: Sequence[Row]) -> list[int]:
    """Where each request's rows start in ``rows`` (the writer keeps them together)."""
    starts = [0]
    for i in range(1, len(rows)):
        if _REQUEST_KEY(rows[i]) != _REQUEST_KEY(rows[i - 1]):
            starts.append(i)
    return starts if rows else []


def _block(key: tuple[str, bool], run: list[Row]) -> tuple[Any, ...]:
    cells = orjson.dumps([row[_BLOCK_CELLS:] for row in run]).decode()
    return (key[0], key[1], run[0][_ROW_INDEX], len(run), cells)


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
            for table, columns in _COLUMNS_OF.items()
        }

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        records = split(rows)
        try:
            if self.dialect == "sqlite":
                await self._insert_sqlite(records)
            else:
                await self._copy_postgres(records)
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
            columns = _COLUMNS_OF[table]
            one = "(" + ", ".join("?" * len(columns)) + ")"
            # ON CONFLICT on the key only: OR IGNORE would also skip rows that break NOT
            # NULL, silently.
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * n)} "
                + _CONFLICT[table]
            )
            self._sqlite_sql[(table, n)] = sql
        return sql

    async def _insert_sqlite(self, records: Records) -> None:
        # The format SQLAlchemy's SQLite DateTime reads back (naive UTC text): sqlite3's
        # own datetime adapter is deprecated.
        requests = [
            (*r[:_CREATED_AT], _sqlite_time(r[_CREATED_AT]), *r[_CREATED_AT + 1 :])
            for r in records.requests
        ]
        k = SQLITE_ROWS_PER_STATEMENT
        async with self.engine.begin() as conn:
            for table, items in (
                (REQUESTS, requests),
                (ROWS, records.rows),
                (BLOCKS, records.blocks),
            ):
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

    async def _copy_postgres(self, records: Records) -> None:
        tables = [
            (table, items)
            for table, items in zip((REQUESTS, ROWS, BLOCKS), records, strict=True)
            if items
        ]
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                async with driver.transaction():
                    for table, items in tables:
                        await driver.copy_records_to_table(
                            table, records=items, columns=_COLUMNS_OF[table]
                        )
            except asyncpg.UniqueViolationError:
                # Some are there already (a retried batch): insert what is missing.
                async with driver.transaction():
                    for table, items in tables:
                        await driver.executemany(self._pg_insert[table], items)


def _sqlite_time(value: datetime) -> str:
    """An aware UTC datetime as SQLAlchemy's SQLite DateTime stores it (naive UTC text)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")  # 8x strftime's speed


def _is_invalid_data(exc: BaseException) -> bool:
    """asyncpg's own errors for rows PostgreSQL refuses (class 22 data exceptions,
    class 23 integrity violations), raised by the driver calls made here directly."""
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError)
