"""The database side of the writer: a batch written twice (a retry after a lost commit
acknowledgement) is stored once, and a row the database refuses is isolated without
losing its neighbours."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

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

_callers = itertools.count()


async def _count(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(PredictionRecord))).scalar()
        )


async def _predicted_event(a: Any, n: int) -> Any:
    """The inference event of one ``ids`` prediction of ``n`` rows by a new caller."""
    alice = await a.caller(f"alice{next(_callers)}")
    recorder = Recorder()
    a.app.state.mlgate.dataplane.add_observer(recorder)
    await a.predict(alice, "ids", [ROW] * n)
    return recorder.events[-1]


async def test_a_batch_written_twice_is_stored_once(audit_app: AppFactory) -> None:
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        rows = event_rows(await _predicted_event(a, 3), None, raw_inputs=False)
        single = event_rows(await _predicted_event(a, 1), None, raw_inputs=False)
        later = event_rows(await _predicted_event(a, 2), None, raw_inputs=False)
        sink = SqlAuditSink(a.audit.engine)
        await sink.write(rows + single)
        await sink.write(rows + single)  # PostgreSQL: COPY fails on the key, then ON CONFLICT
        await sink.write(single + rows + later)  # some written already, some not
        assert await _count(a.audit.engine) == 3 + 1 + 2
        assert await _table_counts(a.audit.engine) == {
            "prediction_requests": 3,
            "prediction_rows": 1,
            "prediction_row_blocks": 2,
        }


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


def _one_row_requests(one: Any, n: int, first: int) -> list[Any]:
    """The audit rows of ``n`` one-row requests like ``one``, with keys of their own."""
    stem = one.prediction_key[:-5]
    return [
        row
        for i in range(first, first + n)
        for row in event_rows(
            dataclasses.replace(one, prediction_key=f"{stem}{i:05d}"), None, raw_inputs=False
        )
    ]


async def test_batches_of_any_size_use_two_statements_per_table(audit_app: AppFactory) -> None:
    """Every row of batches of many sizes is stored, with one K-row and one one-row
    INSERT per table whatever the sizes (a statement per size made SQLite compile and
    keep one of thousands of placeholders for each); a request of many rows is one
    block record."""
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        one = await _predicted_event(a, 1)
        many = event_rows(await _predicted_event(a, 300), None, raw_inputs=False)
        sink = SqlAuditSink(a.audit.engine)
        written = 0
        for size in (1, 7, SQLITE_ROWS_PER_STATEMENT, 129, 35):
            batch = _one_row_requests(one, size, written)
            await sink.write(batch + many if size == 7 else batch)
            written += size
        assert await _count(a.audit.engine) == written + 300
        assert await _table_counts(a.audit.engine) == {
            "prediction_requests": written + 1,
            "prediction_rows": written,
            "prediction_row_blocks": 1,
        }
        if sink.dialect == "sqlite":
            assert sorted(sink._sqlite_sql) == [
                ("prediction_requests", 1),
                ("prediction_requests", SQLITE_ROWS_PER_STATEMENT),
                ("prediction_row_blocks", 1),
                ("prediction_rows", 1),
                ("prediction_rows", SQLITE_ROWS_PER_STATEMENT),
            ]


async def _table_counts(engine: Any) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table: int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar())
            for table in ("prediction_requests", "prediction_rows", "prediction_row_blocks")
        }


def _expected(row: tuple[Any, ...]) -> dict[str, Any]:
    """An audit row as the ``predictions`` view must read it back."""
    return dict(zip(COLUMNS, row, strict=True))


async def _read_back(engine: Any, key: str) -> list[dict[str, Any]]:
    query = (
        select(PredictionRecord)
        .where(PredictionRecord.request_key == key)
        .order_by(PredictionRecord.row_index)
    )
    async with AsyncSession(engine) as session:
        records = (await session.execute(query)).scalars().all()
    return [{c: getattr(r, c) for c in COLUMNS} for r in records]


@pytest.mark.parametrize("rows", [1, 3])
async def test_the_view_reads_blocks_and_rows_back_exactly(
    audit_app: AppFactory, rows: int
) -> None:
    """Every column of every row reads back through the ``predictions`` view as it was
    written, whether the request was stored as one-row records or as a block: class
    names, probabilities and raw inputs (JSON), floats to the last bit, booleans, NULLs
    of an anomaly model's classification columns and of a calibrating device's verdict."""
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        sink = SqlAuditSink(a.audit.engine)
        event = await _predicted_event(a, rows)
        written = event_rows(event, ("BENIGN", "DoS", "PortScan"), raw_inputs=True)
        alice = await a.caller("bob")
        recorder = Recorder()
        a.app.state.mlgate.dataplane.add_observer(recorder)
        response = await a.client.post(
            "/v1/models/iot/predict/batch",
            json={"instances": [[0.1 * (i + 1)] * 5 for i in range(rows)]},
            headers=alice.with_key,
        )
        assert response.status_code == 200, response.text
        anomaly = recorder.events[-1]
        # A device still calibrating: no verdict, no score, how many readings it has seen.
        calibrating = dataclasses.replace(
            anomaly,
            output=dataclasses.replace(
                anomaly.output,
                scored=np.array([i % 2 == 1 for i in range(rows)]),
                calibration_seen=np.arange(rows) + 5,
            ),
        )
        anomaly_rows = event_rows(anomaly, None, raw_inputs=False)
        other = anomaly.prediction_key[:-1] + ("Y" if anomaly.prediction_key[-1] == "Z" else "Z")
        calibrating_rows = [
            (other, *r[1:]) for r in event_rows(calibrating, None, raw_inputs=False)
        ]
        await sink.write(written + anomaly_rows + calibrating_rows)
        stored = await _table_counts(a.audit.engine)
        assert stored["prediction_row_blocks"] == (3 if rows > 1 else 0)
        for batch in (written, anomaly_rows, calibrating_rows):
            expected = [_expected(r) for r in batch]
            assert await _read_back(a.audit.engine, batch[0][0]) == expected
        assert calibrating_rows[0][COLUMNS.index("is_anomaly")] is None
