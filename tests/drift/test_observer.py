"""The drift observer off the request path: bounded, and nothing lost while the database
is away."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import numpy as np

from mlgate.dataplane import InferenceEvent, InferenceInput
from mlgate.dataplane.outputs import classification_output
from mlgate.db.engine import build_engine
from mlgate.db.migrate import upgrade
from mlgate.drift.observer import DriftObserver
from mlgate.drift.reference import bin_counts
from mlgate.drift.settings import DriftSettings
from mlgate.drift.store import DriftStore
from mlgate.registry.registry import ModelRegistry, ModelVersion
from tests.conftest import make_settings
from tests.drift.sensor_model import write_sensor_model


def event(mv: ModelVersion, x: np.ndarray) -> InferenceEvent:
    raw = np.asarray(mv.runtime.run(x))
    return InferenceEvent(
        request_id="r",
        principal=None,
        protocol="v1",
        model=mv.name,
        version=mv.version,
        task="classification",
        rows=len(x),
        latency_ms=1.0,
        timestamp=time.time(),
        inputs=InferenceInput(x),
        output=classification_output(mv, raw),
        prediction_key="K",
    )


def sensor_registry(tmp_path: Path) -> ModelRegistry:
    write_sensor_model(tmp_path / "models", "1")
    registry = ModelRegistry(tmp_path / "models", default_model="sensor")
    registry.reload()
    return registry


async def test_rows_beyond_the_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    registry = sensor_registry(tmp_path)
    mv = registry.resolve("sensor")
    engine = build_engine(make_settings())
    observer = DriftObserver(registry, DriftStore(engine), DriftSettings(max_pending_rows=15))
    try:
        observer.observe(event(mv, np.ones((10, 3))))
        observer.observe(event(mv, np.ones((10, 3))))  # 20 > 15: dropped whole
        observer.observe(event(mv, np.ones((5, 3))))
        assert observer.stats()["pending_rows"] == 15
        assert observer.stats()["dropped"] == 10
    finally:
        await engine.dispose()


async def test_counts_wait_for_the_database_and_are_all_stored(tmp_path: Path) -> None:
    registry = sensor_registry(tmp_path)
    mv = registry.resolve("sensor")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = build_engine(
        make_settings(
            database_url=f"postgresql://nobody@127.0.0.1:{port}/none",
            database={"pool_timeout_s": 1},
        )
    )
    settings = make_settings()
    live = build_engine(settings)
    await upgrade(live, schema=settings.database.schema_name)
    observer = DriftObserver(registry, DriftStore(dead), DriftSettings())
    try:
        x = np.random.default_rng(0).standard_normal((40, 3))
        observer.observe(event(mv, x[:25]))
        assert await observer.flush() is False
        observer.observe(event(mv, x[25:]))
        assert await observer.flush() is False
        assert observer.stats()["flush_errors"] == 2
        assert observer.stats()["unsaved_windows"] == 1
        observer.store = DriftStore(live)  # the database is back
        assert await observer.flush() is True
        counts, _ = await observer.store.totals("sensor", "1", 0)
        assert sum(counts["@predicted"].values()) == 40
        for f, name in enumerate("abc"):
            assert sum(counts[name].values()) == 40
            bins = np.searchsorted(np.array(observer._bins[mv].edges[f]), x[:, f], side="left")
            expected = np.bincount(bins, minlength=6)
            assert [counts[name].get(b, 0) for b in range(6)] == expected.tolist()
    finally:
        await dead.dispose()
        await live.dispose()


async def test_pending_rows_are_binned_early_and_stored_at_the_flush(tmp_path: Path) -> None:
    """Once bin_rows rows are pending the task bins them without waiting for the flush
    (the inputs are let go), and the next flush stores every row's counts."""
    registry = sensor_registry(tmp_path)
    mv = registry.resolve("sensor")
    settings = make_settings()
    engine = build_engine(settings)
    await upgrade(engine, schema=settings.database.schema_name)
    drift = DriftSettings(bin_rows=20, flush_interval_s=3600)
    observer = DriftObserver(registry, DriftStore(engine), drift)
    observer.start()
    try:
        x = np.random.default_rng(1).standard_normal((45, 3))
        observer.observe(event(mv, x[:10]))
        await asyncio.sleep(0.05)
        assert observer.stats()["pending_rows"] == 10  # below bin_rows: held
        observer.observe(event(mv, x[10:25]))  # 25 >= 20: binned at once
        for _ in range(100):
            if observer.stats()["pending_rows"] == 0:
                break
            await asyncio.sleep(0.02)
        stats = observer.stats()
        assert (stats["pending_rows"], stats["rows"], stats["binnings"]) == (0, 25, 1)
        assert stats["flushes"] == 0 and stats["unsaved_windows"] == 1  # nothing stored yet
        observer.observe(event(mv, x[25:]))
        assert await observer.flush() is True
        counts, _ = await observer.store.totals("sensor", "1", 0)
        assert sum(counts["@predicted"].values()) == 45
        for f, name in enumerate("abc"):
            bins = np.searchsorted(np.array(observer._bins[mv].edges[f]), x[:, f], side="left")
            expected = np.bincount(bins, minlength=6)
            assert [counts[name].get(b, 0) for b in range(6)] == expected.tolist()
    finally:
        await observer.close()
        await engine.dispose()


def test_bin_counts_match_a_search_per_value() -> None:
    """Each value counts in the bin after the edges strictly below it (right-closed
    bins), with ties on an edge, repeated edges, infinities, and NaN in the first bin."""
    rng = np.random.default_rng(7)
    edges = np.sort(rng.standard_normal((6, 5)), axis=1)
    edges[2, 1:3] = edges[2, 1]  # a repeated edge: an empty bin between them
    x = rng.standard_normal((300, 6))
    x[:20, 2] = edges[2, 1]  # on the edge: in the bin it closes
    x[20, 0], x[21, 1], x[22, 4] = np.inf, -np.inf, np.nan
    expected = np.zeros((6, 6), dtype=np.int64)
    for f in range(6):
        for value in x[:, f]:
            b = 0 if np.isnan(value) else int(np.searchsorted(edges[f], value, side="left"))
            expected[f, b] += 1
    assert bin_counts(x, edges).tolist() == expected.tolist()
