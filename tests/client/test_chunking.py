"""Batches larger than the server takes: split under its limit (learned from the server,
never assumed), sent concurrently with a bound, answered in input order, one version."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.client.conftest import (
    BASE_URL,
    BridgeTransport,
    InProcessServer,
    Recorder,
    serve_in_thread,
    sqlite_url,
)
from tests.client.data import IDS_STABLE, distinct_rows, local_classes
from tests.conftest import make_settings

from mlgate.client import AsyncClient, Client


def _expected(rows: np.ndarray) -> np.ndarray:
    return local_classes(rows)


def test_arrays_are_split_under_the_server_limit_in_order(
    client: Client, recorder: Recorder
) -> None:
    rows = distinct_rows(1_050)
    result = client.predict_array("ids", rows)
    infers = recorder.to("/infer")
    assert recorder.paths().count("/info") == 1, "the limit comes from the server"
    assert [e.rows for e in infers].count(100) == 10 and sum(e.rows or 0 for e in infers) == 1_050
    assert max(e.rows or 0 for e in infers) <= 100
    # The first chunk takes the stable alias; the rest are pinned to the version it got.
    assert infers[0].path == "/v2/models/ids/infer"
    assert {e.path for e in infers[1:]} == {f"/v2/models/ids/versions/{IDS_STABLE}/infer"}
    assert result.model_version == IDS_STABLE
    assert result["predicted_class_name"].tolist() == _expected(rows).tolist()
    assert len(set(result.prediction_ids)) == 1_050


def test_json_batches_are_split_the_same_way(client: Client, recorder: Recorder) -> None:
    rows = distinct_rows(230)
    result = client.predict_batch("ids", rows.tolist(), chunk_rows=60)
    batches = recorder.to("/predict/batch")
    # The first batch goes alone (it learns the version); the rest go concurrently.
    assert batches[0].rows == 60 and sorted(e.rows or 0 for e in batches[1:]) == [50, 60, 60]
    assert all(f"version={IDS_STABLE}" in e.query for e in batches[1:])
    assert [p.predicted_class_name for p in result] == _expected(rows).tolist()
    assert len(result.request_ids) == 4


class Concurrency(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Counts requests in flight at once (each held a little so they overlap)."""

    def __init__(self, inner: BridgeTransport) -> None:
        self.inner = inner
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def _enter(self) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._enter()
        try:
            time.sleep(0.05)
            return self.inner.handle_request(request)
        finally:
            self._leave()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._enter()
        try:
            await asyncio.sleep(0.05)
            return await self.inner.handle_async_request(request)
        finally:
            self._leave()


def test_chunks_go_concurrently_within_the_bound(server: InProcessServer) -> None:
    transport = Concurrency(BridgeTransport(server))
    with Client(BASE_URL, api_key=server.admin_key, transport=transport) as c:
        c.predict_array("ids", distinct_rows(1_000), concurrency=3)
    assert transport.peak == 3


async def test_the_async_client_bounds_concurrency_too(server: InProcessServer) -> None:
    transport = Concurrency(BridgeTransport(server))
    async with AsyncClient(BASE_URL, api_key=server.admin_key, transport=transport) as c:
        rows = distinct_rows(1_000)
        result = await c.predict_array("ids", rows, concurrency=2)
    assert transport.peak == 2
    assert result["predicted_class_name"].tolist() == _expected(rows).tolist()


def test_without_access_to_the_limit_the_server_names_it(
    server: InProcessServer, recorder: Recorder
) -> None:
    # A key that may predict but not read /info: the first chunk is refused with a 422
    # that names the maximum, and the client splits by it.
    with Client(BASE_URL, api_key=server.admin_key, transport=BridgeTransport(server)) as a:
        user = a.admin.create_user("predictor", scopes=["predict"])
        key = a.admin.create_key("p", user_id=user.id).key
    rows = distinct_rows(350)
    with Client(BASE_URL, api_key=key, transport=recorder) as c:
        result = c.predict_array("ids", rows)
    assert [(e.path, e.status, e.rows) for e in recorder.log[:2]] == [
        ("/info", 403, None),
        ("/v2/models/ids/infer", 422, 350),
    ]
    assert [e.rows for e in recorder.log[2:]] == [100, 100, 100, 50]
    assert result["predicted_class_name"].tolist() == _expected(rows).tolist()


@pytest.fixture
def small_bodies(tmp_path: Path) -> Iterator[InProcessServer]:
    """Bodies of at most 20,000 bytes: 100 rows of 77 float64 (61,600 bytes) are too big."""
    settings = make_settings(
        database_url=sqlite_url(tmp_path),
        models={"max_batch_rows": 100},
        server={"max_body_bytes": 20_000},
    )
    with serve_in_thread(settings) as running:
        yield running


def test_a_413_halves_the_chunk(small_bodies: InProcessServer) -> None:
    recorder = Recorder(BridgeTransport(small_bodies))
    rows = distinct_rows(100)
    with Client(BASE_URL, api_key=small_bodies.admin_key, transport=recorder) as c:
        result = c.predict_array("ids", rows)
    sent = [(e.status, e.rows) for e in recorder.to("/infer")]
    assert sent == [(413, 100), (413, 50), (200, 25), (200, 25), (413, 50), (200, 25), (200, 25)]
    assert result["predicted_class_name"].tolist() == _expected(rows).tolist()


def test_one_devices_readings_go_one_chunk_at_a_time_in_order(
    client: Client, recorder: Recorder
) -> None:
    readings: list[Any] = [[60.0 + i % 7, 0.2, 0.5, 125.0, 2.5] for i in range(250)]
    result = client.predict_batch("iot", readings, device_id="pump-7", concurrency=4)
    # The device calibrates on its readings in the order they were sent.
    assert [p.calibration["seen"] for p in result if p.calibration] == list(range(1, 251))
    assert [e.rows for e in recorder.to("/predict/batch")] == [100, 100, 50]
