"""Calibration through a real ``mlgate serve --workers 2``: readings sent at the same time
through both workers are each counted exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.servers import Worker, clean_env, connections_to_workers, mlgate_serve

REQUIRED = 24
EXTRA = 8
CONNECTIONS_PER_WORKER = 4
READING = {
    "temperature": 70.0,
    "vibration": 0.027,
    "pressure": 0.1,
    "flow_rate": 32.0,
    "current": 2.2,
}


def _post(worker: Worker, i: int) -> dict[str, object]:
    reading = {k: v * (1 + 0.001 * (i % 7)) for k, v in READING.items()}
    response = worker.request(
        "POST",
        "/predict",
        json={"sensor_data": reading, "model_name": "autoencoder", "device_id": "pump-w"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.slow
def test_two_workers_count_every_calibration_reading_once(tmp_path: Path) -> None:
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_DEVICES__BASELINE_READINGS=str(REQUIRED),
        MLGATE_OBSERVABILITY__ACCESS_LOG="true",
    )
    # Both workers must have loaded the models: readiness is per worker.
    serve = mlgate_serve(tmp_path, env, "--workers", "2", ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2, CONNECTIONS_PER_WORKER) as workers:
        # Each connection (four to each worker) sends its readings one after the other,
        # all connections at the same time.
        connections = [w for conns in workers.values() for w in conns]
        total = REQUIRED + EXTRA
        shares = [range(n, total, len(connections)) for n in range(len(connections))]

        def send(n: int) -> list[dict[str, object]]:
            return [_post(connections[n], i) for i in shares[n]]

        with ThreadPoolExecutor(len(connections)) as pool:
            results = [r for share in pool.map(send, range(len(connections))) for r in share]
        calibrating = sorted(
            r["calibration"]["seen"]  # type: ignore[index]
            for r in results
            if r["status"] == "calibrating"
        )
        assert calibrating == list(range(1, REQUIRED + 1))
        assert sum(r["status"] == "scored" for r in results) == EXTRA
        baseline = httpx.get(f"{server.url}/v1/models/iot-autoencoder/devices/pump-w/baseline")
        assert baseline.json()["status"] == "ready"
        assert baseline.json()["calibration"] == {"seen": REQUIRED, "required": REQUIRED}
