"""Calibration through a real ``mlgate serve --workers 2``: readings sent at the same time
over fresh connections (so both workers take some) are each counted exactly once."""
# A device belongs to an account: the readings are sent with a key made by the CLI.

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from click.testing import CliRunner

from mlgate.cli.main import cli
from tests.servers import clean_env, mlgate_serve

REQUIRED = 24
READING = {
    "temperature": 70.0,
    "vibration": 0.027,
    "pressure": 0.1,
    "flow_rate": 32.0,
    "current": 2.2,
}


def _post(url: str, key: str, i: int) -> dict[str, object]:
    reading = {k: v * (1 + 0.001 * (i % 7)) for k, v in READING.items()}
    # A new connection per request: the kernel spreads them over the workers.
    with httpx.Client(timeout=30, headers={"X-API-Key": key}) as client:
        response = client.post(
            f"{url}/predict",
            json={"sensor_data": reading, "model_name": "autoencoder", "device_id": "pump-w"},
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_two_workers_count_every_calibration_reading_once(tmp_path: Path) -> None:
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_DEVICES__BASELINE_READINGS=str(REQUIRED),
    )
    runner = CliRunner()
    made = runner.invoke(
        cli, ["users", "create", "w", "--scope", "predict", "--no-password"], env=env
    )
    assert made.exit_code == 0, made.output
    created = runner.invoke(cli, ["keys", "create", "--user", "w", "--name", "t"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    # Both workers must have loaded the models: readiness is per worker.
    with mlgate_serve(tmp_path, env, "--workers", "2", ready_in_a_row=20) as server:
        url = server.url
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: _post(url, key, i), range(REQUIRED + 8)))
        calibrating = sorted(
            r["calibration"]["seen"]  # type: ignore[index]
            for r in results
            if r["status"] == "calibrating"
        )
        assert calibrating == list(range(1, REQUIRED + 1))
        assert sum(r["status"] == "scored" for r in results) == 8
        baseline = httpx.get(
            f"{url}/v1/models/iot-autoencoder/devices/pump-w/baseline", headers={"X-API-Key": key}
        ).json()
        assert baseline["status"] == "ready"
        assert baseline["calibration"] == {"seen": REQUIRED, "required": REQUIRED}
