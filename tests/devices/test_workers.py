"""Calibration through a real ``mlgate serve --workers 2``: readings sent at the same time
over fresh connections (so both workers take some) are each counted exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve_process import free_port

REQUIRED = 24
READING = {
    "temperature": 70.0,
    "vibration": 0.027,
    "pressure": 0.1,
    "flow_rate": 32.0,
    "current": 2.2,
}


def _post(url: str, i: int) -> dict[str, object]:
    reading = {k: v * (1 + 0.001 * (i % 7)) for k, v in READING.items()}
    # A new connection per request: the kernel spreads them over the workers.
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{url}/predict",
            json={"sensor_data": reading, "model_name": "autoencoder", "device_id": "pump-w"},
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_two_workers_count_every_calibration_reading_once(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    env |= {
        "MLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        "MLGATE_AUTH__ANONYMOUS_ENABLED": "true",
        "MLGATE_RATE_LIMIT__ENABLED": "false",
        "MLGATE_DEVICES__BASELINE_READINGS": str(REQUIRED),
    }
    argv = [sys.executable, "-m", "mlgate", "serve", "--port", str(port), "--workers", "2"]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*argv, "--log-level", "warning"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"mlgate serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("mlgate serve --workers 2 did not become ready within 60 s")
        # Both workers must have loaded the models: readiness is per worker.
        for _ in range(20):
            httpx.get(f"{url}/health/ready", timeout=5).raise_for_status()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: _post(url, i), range(REQUIRED + 8)))
        calibrating = sorted(
            r["calibration"]["seen"]  # type: ignore[index]
            for r in results
            if r["status"] == "calibrating"
        )
        assert calibrating == list(range(1, REQUIRED + 1))
        assert sum(r["status"] == "scored" for r in results) == 8
        baseline = httpx.get(f"{url}/v1/models/iot-autoencoder/devices/pump-w/baseline").json()
        assert baseline["status"] == "ready"
        assert baseline["calibration"] == {"seen": REQUIRED, "required": REQUIRED}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
