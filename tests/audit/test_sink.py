"""The database side of the writer: a batch written twice (a retry after a lost commit
acknowledgement) is stored once, and a row the database refuses is isolated without
losing its neighbours."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import func, select

from mlgate.audit.records import COLUMNS, event_rows
from mlgate.audit.sink import (
    REQUEST_COLUMNS,
    ROW_COLUMNS,
    SQLITE_ROWS_PER_STATEMENT,
    InvalidRows,
    SqlAuditSink,
)
from mlgate.db.models import PredictionRecord, PredictionRequest, PredictionRow
from tests.audit.conftest import ROW, AppFactory
from tests.dataplane.test_observers import Recorder


async def _count(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(PredictionRecord))).scalar()
        )


async def _predicted_event(a: Any, n: int) -> Any:
    """The inference event of one ``ids`` prediction of ``n`` rows by a new caller."""
    alice = await a.caller("alice")
    recorder = Recorder()
    a.app.state.mlgate.dataplane.add_observer(recorder)
    await a.predict(alice, "ids", [ROW] * n)
    return recorder.events[-1]


async def test_a_batch_written_twice_is_stored_once(audit_app: AppFactory) -> None:
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        rows = event_rows(await _predicted_event(a, 3), None, raw_inputs=False)
        sink = SqlAuditSink(a.audit.engine)
        await sink.write(rows)
        await sink.write(rows)  # PostgreSQL: COPY fails on the key, then ON CONFLICT
        await sink.write(rows[:1] + rows)
        assert await _count(a.audit.engine) == 3


async def test_invalid_rows_are_isolated_and_counted(audit_app: AppFactory) -> None:
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        good = await _predicted_event(a, 2)
        log = a.audit.log
        assert log is not None
        # A bug: an event without a protocol (NOT NULL) - refused by the database.
        key = good.prediction_key[:-1] + "0"
        bad = dataclasses.replace(good, prediction_key=key, protocol=None)  # type: ignore[arg-type]
        sink = SqlAuditSink(a.audit.engine)
        try:
            await sink.write(event_rows(bad, None, raw_inputs=False))
        except InvalidRows:
            pass
        else:  # pragma: no cover - the test's premise
            raise AssertionError("the database accepted a NULL protocol")
        log.observe(bad)
        assert await log.flush()
        stats = log.stats()
        assert (stats.written, stats.rejected, stats.depth) == (2, 2, 0)
        assert await _count(a.audit.engine) == 2


def test_the_sink_writes_every_column_of_both_tables() -> None:
    """The columns the sink splits each audit row into are exactly those of the two
    tables (a column added to a table and not to the rows fails here)."""
    assert set(REQUEST_COLUMNS) == set(PredictionRequest.__table__.columns.keys())
    assert set(ROW_COLUMNS) == set(PredictionRow.__table__.columns.keys())
    assert set(REQUEST_COLUMNS) | set(ROW_COLUMNS) == set(COLUMNS)
    assert list(PredictionRecord.__table__.columns.keys()) == list(COLUMNS)


async def test_batches_of_any_size_use_two_statements_per_table(audit_app: AppFactory) -> None:
    """Every row of batches of many sizes is stored, with one K-row and one one-row
    INSERT per table whatever the sizes (a statement per size made SQLite compile and
    keep one of thousands of placeholders for each)."""
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        rows = event_rows(await _predicted_event(a, 300), None, raw_inputs=False)
        sink = SqlAuditSink(a.audit.engine)
        written = 0
        for size in (1, 7, SQLITE_ROWS_PER_STATEMENT, 129, 300 - 265):
            await sink.write(rows[written : written + size])
            written += size
        assert written == 300
        assert await _count(a.audit.engine) == 300
        if sink.dialect == "sqlite":
            # One request per batch here: its table only ever needed the one-row INSERT.
            assert sorted(sink._sqlite_sql) == [
                ("prediction_requests", 1),
                ("prediction_rows", 1),
                ("prediction_rows", SQLITE_ROWS_PER_STATEMENT),
            ]
