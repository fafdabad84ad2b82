"""Adaptive batching, load shedding, timeouts and disconnects: the runner step.

The batcher is tested on its own (a model call we control) and through HTTP with a
model whose calls take a known time and record what they were given.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from mlgate.dataplane.batching import AdaptiveBatcher, BatcherClosed
from mlgate.registry.manifest import Manifest
from mlgate.registry.runtimes import LoadOptions, register_runtime
from tests.conftest import make_settings, running_app

# -- the batcher on its own ------------------------------------------------------------


class Calls:
    """A model call that doubles its input and records the batch sizes it saw."""

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        await self.release.wait()
        self.sizes.append(len(x))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("bad rows")
        return x[:, 0] * 2


def rows(*values: float) -> np.ndarray:
    return np.array([[v] for v in values])


async def test_concurrent_callers_share_calls_and_get_their_own_rows() -> None:
    calls = Calls()
    batcher = AdaptiveBatcher(calls, max_batch_size=64, max_delay_s=0.05)
    results = await asyncio.gather(*(batcher.submit(rows(i, i + 0.5)) for i in range(20)))
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out, [2 * i, 2 * i + 1])
    assert sum(calls.sizes) == 40
    assert len(calls.sizes) < 20
    await batcher.close()


async def test_batches_never_exceed_the_maximum() -> None:
    calls = Calls()
    batcher = AdaptiveBatcher(calls, max_batch_size=8, max_delay_s=0.05)
    await asyncio.gather(*(batcher.submit(rows(i, i, i)) for i in range(10)))
    assert max(calls.sizes) <= 8
    # A request larger than the maximum still runs, alone.
    out = await batcher.submit(rows(*range(20)))
    assert len(out) == 20 and calls.sizes[-1] == 20
    await batcher.close()


async def test_a_batch_that_fills_runs_without_waiting_out_the_delay() -> None:
    calls = Calls()
    batcher = AdaptiveBatcher(calls, max_batch_size=4, max_delay_s=30.0)
    # Well inside the 30 s delay: only the filling request can have started the batch.
    async with asyncio.timeout(5):
        await asyncio.gather(*(batcher.submit(rows(i)) for i in range(4)))
    assert calls.sizes == [4]
    await batcher.close()


async def test_a_lone_request_waits_at_most_the_delay() -> None:
    calls = Calls()
    batcher = AdaptiveBatcher(calls, max_batch_size=64, max_delay_s=0.05)
    async with asyncio.timeout(5):
        assert (await batcher.submit(rows(3))).tolist() == [6]
    assert calls.sizes == [1]
    await batcher.close()


async def test_close_ends_a_gathering_batch_at_once() -> None:
    calls = Calls()
    batcher = AdaptiveBatcher(calls, max_batch_size=64, max_delay_s=30.0)
    waiting = asyncio.ensure_future(batcher.submit(rows(1, 2)))
    await asyncio.sleep(0.01)
    assert batcher.queued_rows == 2
    async with asyncio.timeout(5):
        await batcher.close()
        assert (await waiting).tolist() == [2, 4]
    assert batcher.queued_rows == 0


async def test_an_error_reaches_only_its_caller() -> None:
    calls = Calls(fail_on=13.0)
    batcher = AdaptiveBatcher(calls, max_batch_size=64, max_delay_s=0.05)
    results = await asyncio.gather(
        *(batcher.submit(rows(i)) for i in (1, 13, 2, 3)), return_exceptions=True
    )
    assert isinstance(results[1], ValueError)
    assert [r.tolist() for r in results if not isinstance(r, Exception)] == [[2], [4], [6]]
    await batcher.close()


async def test_a_caller_that_gives_up_leaves_no_rows_queued() -> None:
    calls = Calls()
    calls.release.clear()  # the model is busy: the first batch waits
    batcher = AdaptiveBatcher(calls, max_batch_size=64, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(batcher.submit(rows(99)))
    stays = asyncio.ensure_future(batcher.submit(rows(2)))
    await asyncio.sleep(0.01)
    assert batcher.queued_rows == 2  # the first is with the model
    gone.cancel()
    calls.release.set()
    assert (await first).tolist() == [2]
    assert (await stays).tolist() == [4]
    assert sum(calls.sizes) == 2  # the 99 never reached the model
    assert batcher.queued_rows == 0
    await batcher.close()


async def test_close_answers_what_is_queued_and_refuses_the_rest() -> None:
    calls = Calls(delay_s=0.02)
    batcher = AdaptiveBatcher(calls, max_batch_size=2, max_delay_s=0.0)
    queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.close()
    assert [(await q).tolist() for q in queued] == [[2 * i] for i in range(6)]
    with pytest.raises(BatcherClosed):
        await batcher.submit(rows(1))


# -- through HTTP ----------------------------------------------------------------------


class SlowRuntime:
    """Uniform probabilities after ``runtime_options.sleep_s`` per call; records the rows
    of every call (thread-safe: calls run in worker threads)."""

    input_dtype = np.dtype(np.float64)
    seen: ClassVar[list[int]] = []
    #: The first feature of every test row that reached the model (tells rows apart).
    firsts: ClassVar[list[float]] = []
    lock = threading.Lock()

    def __init__(self, artifact: Path, manifest: Manifest, _: LoadOptions) -> None:
        self.n = len(manifest.classes)
        self.sleep_s = float(manifest.runtime_options.get("sleep_s", 0.0))

    def run(self, x: np.ndarray) -> np.ndarray:
        time.sleep(0.001)  # slow enough at warm-up to be run in a thread, never inline
        if np.all(x[:, 1:] == 0.5):  # the tests' rows (not the warm-up's typical row)
            time.sleep(self.sleep_s)
            with self.lock:
                SlowRuntime.seen.append(len(x))
                SlowRuntime.firsts.extend(x[:, 0].tolist())
        out = np.zeros((len(x), self.n))
        out[np.arange(len(x)), np.abs(x[:, 0]).astype(int) % self.n] = 1.0
        return out


@pytest.fixture
def slow_repo(model_repo: Path) -> Path:
    register_runtime("slow-test", SlowRuntime)
    SlowRuntime.seen.clear()
    SlowRuntime.firsts.clear()
    target = model_repo / "slow" / "1"
    shutil.copytree(model_repo / "ids" / "1", target)
    manifest = yaml.safe_load((target / "manifest.yaml").read_text())
    manifest.update(
        name="slow", version="1", runtime="slow-test", runtime_options={"sleep_s": 0.05}
    )
    (target / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return model_repo


def flow(k: int) -> dict[str, Any]:
    return {"features": [float(k)] + [0.5] * 76}


async def test_batched_http_answers_equal_unbatched(slow_repo: Path) -> None:
    models = {"repository": slow_repo, "batching": True, "batching_max_delay_ms": 20}
    async with running_app(make_settings(models=models)) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/models/slow/predict", json=flow(k)) for k in range(24))
        )
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["predicted_class"] for r in responses] == [k % 7 for k in range(24)]
    assert sum(SlowRuntime.seen) == 24
    assert len(SlowRuntime.seen) < 24  # shared calls


async def test_a_manifest_turns_batching_on_for_its_model(slow_repo: Path) -> None:
    manifest_path = slow_repo / "slow" / "1" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["batching"] = {"enabled": True, "max_batch_size": 4, "max_delay_ms": 20}
    manifest_path.write_text(yaml.safe_dump(manifest))
    async with running_app(make_settings(models={"repository": slow_repo})) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/models/slow/predict", json=flow(k)) for k in range(12))
        )
    assert all(r.status_code == 200 for r in responses)
    assert max(SlowRuntime.seen) <= 4 and len(SlowRuntime.seen) < 12


async def test_a_full_queue_is_shed_at_once_with_retry_after(slow_repo: Path) -> None:
    models = {"repository": slow_repo, "max_queue": 2}
    async with running_app(make_settings(models=models)) as (_, client):
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.post("/v1/models/slow/predict", json=flow(k)) for k in range(8))
        )
        elapsed = time.perf_counter() - started
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 503 in codes, codes
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert all(r.json()["error"]["code"] == "overloaded" for r in shed)
    assert elapsed < 5


async def test_a_slow_prediction_is_504(slow_repo: Path) -> None:
    manifest_path = slow_repo / "slow" / "1" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["runtime_options"] = {"sleep_s": 1.0}
    manifest_path.write_text(yaml.safe_dump(manifest))
    models = {"repository": slow_repo, "prediction_timeout_s": 0.2}
    async with running_app(make_settings(models=models)) as (_, client):
        response = await client.post("/v1/models/slow/predict", json=flow(1))
        oip = await client.post(
            "/v2/models/slow/infer",
            json={
                "inputs": [
                    {"name": "x", "shape": [1, 77], "datatype": "FP64", "data": flow(1)["features"]}
                ]
            },
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "prediction_timeout"
    assert oip.status_code == 504 and "did not answer" in oip.json()["error"]


async def test_a_reload_drains_the_batcher_without_failing_requests(slow_repo: Path) -> None:
    models = {"repository": slow_repo, "batching": True, "batching_max_delay_ms": 10}
    settings = make_settings(models=models)
    async with running_app(settings, as_admin=True) as (_, client):
        requests = [
            asyncio.ensure_future(client.post("/v1/models/slow/predict", json=flow(k)))
            for k in range(16)
        ]
        await asyncio.sleep(0.02)
        manifest = slow_repo / "slow" / "1" / "manifest.yaml"
        manifest.write_text(manifest.read_text() + "\n")  # the version changes on disk
        reload = await client.post("/v1/admin/models/reload")
        responses = await asyncio.gather(*requests)
        after = await client.post("/v1/models/slow/predict", json=flow(3))
    assert reload.json()["loaded"] == {"slow": ["1"]}
    assert [r.status_code for r in responses] == [200] * 16
    assert after.status_code == 200


async def test_a_client_that_disconnects_leaves_no_rows_queued(slow_repo: Path) -> None:
    """Driven at the ASGI level: the second client goes away while its request waits
    behind the first; its rows must never reach the model."""
    models = {"repository": slow_repo, "batching": True, "batching_max_delay_ms": 0}
    async with running_app(make_settings(models=models)) as (app, client):
        first = asyncio.ensure_future(client.post("/v1/models/slow/predict", json=flow(1)))
        await asyncio.sleep(0.01)  # the first is running on the model now
        gone = asyncio.Event()
        body = b'{"features": [42' + b", 0.5" * 76 + b"]}"
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append({})
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/models/slow/predict",
            "raw_path": b"/v1/models/slow/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"t")],
            "client": ("127.0.0.1", 5000),
            "server": ("t", 80),
        }
        waiting = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.01)
        gone.set()
        await waiting
        assert (await first).status_code == 200
        await asyncio.sleep(0.1)
    # Only the first request's row ran: never the disconnected one's (first feature 42;
    # a model call a previous test left in a worker thread may still land in `seen`).
    assert 42.0 not in SlowRuntime.firsts
    assert 1.0 in SlowRuntime.firsts
