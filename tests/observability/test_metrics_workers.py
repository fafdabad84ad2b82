"""With `mlgate serve --workers 2`, /metrics counts every worker's requests exactly once
whichever worker answers the scrape, and a worker that dies keeps its counts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from mlgate.settings import bundled_repository
from tests.observability.scrape import parse, total
from tests.servers import Worker, clean_env, connections_to_workers, free_port, mlgate_serve

ROW = {"features": [0.5] * 77}
PER_WORKER = (4, 7)  # a known, uneven number of predictions on each worker


def _ready(worker: Worker, timeout_s: float = 60) -> None:
    """Wait until this worker has loaded its models (a worker restarted by uvicorn's
    health check may still be loading)."""
    deadline = time.monotonic() + timeout_s
    while worker.request("GET", "/health/ready").status_code != 200:
        assert time.monotonic() < deadline, f"worker {worker.pid} never became ready"
        time.sleep(0.2)


def _scrape(worker: Worker) -> str:
    response = worker.request("GET", "/metrics")
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.slow
def test_two_workers_count_each_prediction_exactly_once(tmp_path: Path) -> None:
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__BOOTSTRAP_ADMIN="false",
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_METRICS__PUBLIC="true",
        MLGATE_OBSERVABILITY__ACCESS_LOG="true",
        MLGATE_METRICS__PORT=str(metrics_port := free_port()),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    repository = tmp_path / "models"  # one model: workers start fast
    shutil.copytree(bundled_repository() / "ids", repository / "ids")
    args = ("--workers", "2", "--repository", str(repository))
    with (
        mlgate_serve(tmp_path, env, *args, log_level="info", ready_in_a_row=4) as server,
        connections_to_workers(server, 2) as workers,
    ):
        pids = sorted(workers)
        for pid in pids:
            _ready(workers[pid][0])
        expected = sum(PER_WORKER)
        for pid, n in zip(pids, PER_WORKER, strict=True):
            for _ in range(n):
                answer = workers[pid][0].request("POST", "/v1/models/ids/predict", json=ROW)
                assert answer.status_code == 200, answer.text
        for pid in pids:  # each worker, asked in turn, reports both workers' counts
            samples = parse(_scrape(workers[pid][0]))
            assert total(samples, "mlgate_predictions_total", model="ids") == expected
            assert total(samples, "mlgate_inference_requests_total", model="ids") == expected
            assert (
                total(
                    samples,
                    "mlgate_http_requests_total",
                    route="/v1/models/{model}/predict",
                    status="200",
                )
                == expected
            )
            # Only the scrape itself is in flight, over both workers.
            assert total(samples, "mlgate_http_requests_in_flight") == 1

        # The same totals, without credentials, on the metrics port of the serve process.
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        samples = parse(scraped.text)
        assert total(samples, "mlgate_predictions_total", model="ids") == expected
        assert total(samples, "mlgate_http_requests_in_flight") == 0

        # The metrics directory is this run's own, private one.
        directory = _metrics_dir(pids[0])
        assert directory is not None and directory.name.startswith("mlgate-metrics-")
        assert oct(directory.stat().st_mode & 0o777) == "0o700"

        # A worker killed outright: uvicorn starts another; the dead one's counts stay.
        os.kill(pids[0], signal.SIGKILL)
        survivor = workers[pids[1]][0]
        deadline = time.monotonic() + 60
        while True:
            samples = parse(_scrape(survivor))
            assert total(samples, "mlgate_predictions_total", model="ids") == expected
            assert total(samples, "mlgate_http_requests_in_flight") == 1
            if time.monotonic() > deadline or not any(
                f"_{pids[0]}.db" in name and "live" in name for name in os.listdir(directory)
            ):
                break
            time.sleep(0.2)
        assert not any(f"gauge_livesum_{pids[0]}.db" == n for n in os.listdir(directory))
    assert not directory.exists()  # removed when the server stopped
    # JSON logs (stderr is no terminal here): every line an object; requests carry ids.
    records = [json.loads(line) for line in server.log.read_text().splitlines()]
    access = [r for r in records if r["logger"] == "mlgate.access"]
    assert len(access) >= expected and all(r["request_id"] for r in access)


def _metrics_dir(pid: int) -> Path | None:
    """The PROMETHEUS_MULTIPROC_DIR a worker process runs with (Linux /proc)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        match = re.match(rb"PROMETHEUS_MULTIPROC_DIR=(.*)", item)
        if match:
            return Path(match.group(1).decode())
    return None


@pytest.mark.slow
def test_one_worker_serves_the_metrics_port_too(tmp_path: Path) -> None:
    """With one worker the app runs in the serve process itself: it must count into the
    directory (prometheus_client picks its mode once, when first imported)."""
    port = free_port()
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__BOOTSTRAP_ADMIN="false",
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_METRICS__PORT=str(port),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    repository = tmp_path / "models"
    shutil.copytree(bundled_repository() / "ids", repository / "ids")
    with mlgate_serve(tmp_path, env, "--repository", str(repository)) as server:
        for _ in range(3):
            answer = httpx.post(f"{server.url}/v1/models/ids/predict", json=ROW, timeout=10)
            assert answer.status_code == 200, answer.text
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert total(parse(scraped.text), "mlgate_predictions_total", model="ids") == 3
