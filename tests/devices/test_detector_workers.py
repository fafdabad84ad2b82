"""Per-device detectors through a real ``mlgate serve --workers 2``: a SKAB run sent in
chunks that alternate between the two worker processes is one stream (the library's
verdicts), and chunks sent through both at once count every calibration reading once."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.settings import bundled_repository
from tests.devices.test_detectors import MODEL, VERSION, check_against_the_library, run
from tests.devices.test_workers import _mlgate
from tests.servers import Worker, clean_env, connections_to_workers, mlgate_serve

PREDICT = f"/v1/models/{MODEL}/predict/batch"


def _send(worker: Worker, key: str, device: str, rows: np.ndarray) -> list[dict[str, Any]]:
    response = worker.request(
        "POST",
        PREDICT,
        json={"instances": rows.tolist(), "device_id": device, "version": VERSION},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def _wait_ready(worker: Worker, timeout_s: float = 60) -> None:
    """Readiness is per worker: wait until this connection's worker has its models."""
    deadline = time.monotonic() + timeout_s
    while worker.request("GET", "/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "worker not ready"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_worker_processes_make_one_stream_per_device(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundled_repository() / MODEL, models / MODEL)
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_MODELS__REPOSITORY=str(models),
        MLGATE_MODELS__DEFAULT_MODEL=MODEL,
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_OBSERVABILITY__ACCESS_LOG="true",
        MLGATE_AUTH__BOOTSTRAP_ADMIN="false",
        MLGATE_AUTH__ARGON2_TIME_COST="1",
        MLGATE_AUTH__ARGON2_MEMORY_COST_KIB="8",
        MLGATE_AUTH__ARGON2_PARALLELISM="1",
    )
    _mlgate(env, "users", "create", "w", "--scope", "predict", "--no-password")
    key = _mlgate(env, "keys", "create", "--user", "w", "--name", "t")
    serve = mlgate_serve(tmp_path, env, "--workers", "2", ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2, 2) as pinned:
        first, second = (conns for conns in pinned.values())
        for worker in (*first, *second):
            _wait_ready(worker)
        # One device, its chunks alternating between the two processes.
        predictions: list[dict[str, Any]] = []
        for i, chunk in enumerate(np.array_split(run(), 15)):
            predictions += _send((first[0], second[0])[i % 2], key, "run-1", chunk)
        check_against_the_library(predictions)
        # Another device, chunks sent through both processes at the same time.
        connections = [*first, *second]
        parts = np.array_split(run()[:440], len(connections))
        with ThreadPoolExecutor(len(connections)) as pool:
            results = list(
                pool.map(
                    lambda i: _send(connections[i], key, "run-2", parts[i]),
                    range(len(parts)),
                )
            )
        flat = [p for r in results for p in r]
        seen = sorted(p["calibration"]["seen"] for p in flat if p["status"] == "calibrating")
        assert seen == list(range(1, 401))
        assert sum(p["status"] == "scored" for p in flat) == 40
