"""Device baselines through a real ``mlgate serve --workers 2``: readings sent at the same
time through both workers are each counted exactly once, and a baseline uploaded through
one worker is used by the other within the cache TTL. A device belongs to an account:
readings are sent with a key made by the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
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


def _post(worker: Worker, key: str, i: int) -> dict[str, object]:
    reading = {k: v * (1 + 0.001 * (i % 7)) for k, v in READING.items()}
    # Version 2 scores against device baselines (stable, 3, has per-device detectors).
    response = worker.request(
        "POST",
        "/v1/models/iot-autoencoder/predict",
        json={"features": reading, "device_id": "pump-w", "version": "2"},
        headers={"X-API-Key": key},
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
        MLGATE_AUTH__BOOTSTRAP_ADMIN="false",
        MLGATE_AUTH__ARGON2_TIME_COST="1",
        MLGATE_AUTH__ARGON2_MEMORY_COST_KIB="8",
        MLGATE_AUTH__ARGON2_PARALLELISM="1",
    )
    _mlgate(env, "users", "create", "w", "--scope", "predict", "--no-password")
    key = _mlgate(env, "keys", "create", "--user", "w", "--name", "t")
    # Both workers must have loaded the models: readiness is per worker.
    serve = mlgate_serve(tmp_path, env, "--workers", "2", ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2, CONNECTIONS_PER_WORKER) as workers:
        # Each connection (four to each worker) sends its readings one after the other,
        # all connections at the same time.
        connections = [w for conns in workers.values() for w in conns]
        total = REQUIRED + EXTRA
        shares = [range(n, total, len(connections)) for n in range(len(connections))]

        def send(n: int) -> list[dict[str, object]]:
            return [_post(connections[n], key, i) for i in shares[n]]

        with ThreadPoolExecutor(len(connections)) as pool:
            results = [r for share in pool.map(send, range(len(connections))) for r in share]
        calibrating = sorted(
            r["calibration"]["seen"]  # type: ignore[index]
            for r in results
            if r["status"] == "calibrating"
        )
        assert calibrating == list(range(1, REQUIRED + 1))
        assert sum(r["status"] == "scored" for r in results) == EXTRA
        baseline = httpx.get(
            f"{server.url}/v1/models/iot-autoencoder/devices/pump-w/baseline",
            headers={"X-API-Key": key},
        )
        assert baseline.json()["status"] == "ready"
        assert baseline.json()["calibration"] == {"seen": REQUIRED, "required": REQUIRED}


def _mlgate(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _expected(response: httpx.Response) -> dict[str, float]:
    """The baseline mean a scored reading was compared with, for the sensors its
    explanation lists."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "scored", body
    return {d["feature"]: d["expected"] for d in body["deviations"]}


@pytest.mark.slow
def test_a_baseline_upload_reaches_the_other_worker(tmp_path: Path) -> None:
    ttl_s = 0.5
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__BOOTSTRAP_ADMIN="false",
        MLGATE_AUTH__ARGON2_TIME_COST="1",
        MLGATE_AUTH__ARGON2_MEMORY_COST_KIB="8",
        MLGATE_AUTH__ARGON2_PARALLELISM="1",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_DEVICES__BASELINE_READINGS="5",
        MLGATE_DEVICES__CACHE_TTL_S=str(ttl_s),
        MLGATE_OBSERVABILITY__ACCESS_LOG="true",
    )
    _mlgate(env, "users", "create", "ops", "--no-password", "--admin")
    headers = {"X-API-Key": _mlgate(env, "keys", "create", "--user", "ops", "--name", "ops")}
    url = "/v1/models/iot/devices/pump-u/baseline"

    def reading(i: int) -> dict[str, object]:
        features = {k: v * (1 + 0.001 * (i % 3)) for k, v in READING.items()}
        return {"features": features, "device_id": "pump-u", "version": "2"}

    serve = mlgate_serve(tmp_path, env, "--workers", "2", ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2) as pinned:
        uploader, other = (conns[0] for conns in pinned.values())
        # The other worker calibrates the device and caches its finished baseline.
        for i in range(5):
            other.request("POST", "/v1/models/iot/predict", json=reading(i), headers=headers)
        calibrated = _expected(
            other.request("POST", "/v1/models/iot/predict", json=reading(5), headers=headers)
        )
        for feature, mean in calibrated.items():
            assert mean == pytest.approx(READING[feature], rel=0.002)
        # An admin uploads another baseline through the first worker.
        uploaded = {k: {"mean": v * 1.5, "std": v * 0.1} for k, v in READING.items()}
        put = uploader.request("PUT", url, json={"baseline": uploaded}, headers=headers)
        assert put.status_code == 200, put.text
        here = uploader.request("POST", "/v1/models/iot/predict", json=reading(6), headers=headers)
        assert _expected(here) == {k: uploaded[k]["mean"] for k in _expected(here)}
        # Within the cache TTL, the other worker scores against the upload too.
        time.sleep(ttl_s + 0.2)
        there = other.request("POST", "/v1/models/iot/predict", json=reading(7), headers=headers)
        assert _expected(there) == {k: uploaded[k]["mean"] for k in _expected(there)}
        baseline = other.request("GET", url, headers=headers).json()
        assert baseline["source"] == "upload"
