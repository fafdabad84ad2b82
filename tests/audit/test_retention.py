"""Records (and their feedback) older than the retention period are deleted in the
background, a bounded batch per DELETE; newer ones stay."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sqlalchemy import event as sa_event

from mlgate.audit.keys import key_floor
from tests.audit.conftest import ROW, AppFactory, AuditApp, eventually
from tests.dataplane.test_observers import Recorder

DAY = 86_400.0


async def _old_and_new(
    a: AuditApp, *, old_requests: int, label_old: bool = True
) -> tuple[list[str], list[str]]:
    """Recent predictions, and records of ``old_requests`` two-row requests answered three
    days ago (recorded through the audit log like any answer). Two old rows and one new
    get feedback; with ``label_old`` False only the new one (a pruner already running
    may delete the old rows first)."""
    alice = await a.caller("alice")
    recorder = Recorder()
    a.app.state.mlgate.dataplane.add_observer(recorder)
    new = [p["prediction_id"] for p in await a.predict(alice, "ids", [ROW] * 3)]
    await a.predict(alice, "ids", [ROW, ROW])
    template = recorder.events[-1]
    old: list[str] = []
    log = a.audit.log
    assert log is not None
    for i in range(old_requests):
        key = key_floor(time.time() - 3 * DAY + i)
        log.observe(
            dataclasses.replace(template, prediction_key=key, timestamp=time.time() - 3 * DAY)
        )
        old += [f"{key}-0", f"{key}-1"]
    new += [f"{template.prediction_key}-0", f"{template.prediction_key}-1"]
    labelled = (old[0], old[3], new[0]) if label_old else (new[0],)
    labels = [{"prediction_id": pid, "label": "DoS"} for pid in labelled]
    response = await a.client.post(
        "/v1/feedback", json={"feedback": labels}, headers=alice.with_key
    )
    assert response.json()["accepted"] == len(labelled), response.text
    return old, new


async def _recorded(a: AuditApp) -> set[str]:
    admin = await a.caller(f"admin{time.monotonic_ns()}", ["admin"])
    return {r["prediction_id"] for r in await a.list_all(admin.with_key)}


async def test_pruning_deletes_old_records_in_batches(audit_app: AppFactory) -> None:
    settings = {"retention_days": 1, "prune_batch": 4, "prune_interval_s": 3600}
    async with audit_app(audit=settings) as a:
        old, new = await _old_and_new(a, old_requests=7)
        assert await _recorded(a) == set(old) | set(new)
        deletes: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("DELETE FROM PREDICTION_ROWS"):
                deletes.append(statement)

        engine = a.audit.engine.sync_engine
        sa_event.listen(engine, "before_cursor_execute", count)
        try:
            assert await a.audit.pruner.prune() == 14
        finally:
            sa_event.remove(engine, "before_cursor_execute", count)
        assert len(deletes) == 4  # 4 + 4 + 4 + 2 rows (then 7 request records in 2)
        assert await _recorded(a) == set(new)
        alice_quality = await a.client.get(
            "/v1/models/ids/quality",
            headers={"X-API-Key": (await a.caller("q", ["models:read"])).key},
        )
        (served,) = alice_quality.json()["versions"]
        assert served["labelled"] == 1  # the old labels went with their predictions
        assert await a.audit.pruner.prune() == 0


async def test_the_background_pruner_runs_on_its_own(audit_app: AppFactory) -> None:
    settings = {"retention_days": 1, "prune_batch": 3, "prune_interval_s": 0.05}
    async with audit_app(audit=settings) as a:
        old, new = await _old_and_new(a, old_requests=4, label_old=False)

        async def pruned() -> bool:
            # The count is added when a pruning pass ends (its feedback pass included).
            return a.audit.pruner.deleted >= len(old) and await _recorded(a) == set(new)

        await eventually(pruned)


async def test_retention_zero_keeps_everything(audit_app: AppFactory) -> None:
    async with audit_app(audit={"retention_days": 0}) as a:
        old, new = await _old_and_new(a, old_requests=2)
        assert await a.audit.pruner.prune() == 0
        assert await _recorded(a) == set(old) | set(new)
