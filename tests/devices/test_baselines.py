"""Per-device baselines through HTTP: calibration, verdicts, persistence, two workers,
upload and reset, and the errors (same tests on SQLite and PostgreSQL). Devices belong
to an account (tests/devices/test_owners.py): these tests call with an admin's key.
Baselines serve version 2 of the IoT models: requests name it (``stable`` is version 3,
whose per-device detectors tests/devices/test_detectors.py tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import make_settings, running_app

REQUIRED = 5
#: The version of the IoT models that scores against device baselines.
BASELINES = "2"
SENSORS = ("temperature", "vibration", "pressure", "flow_rate", "current")
# A plausible operating point of one pump, far from the training data's mean flow.
POINT = np.array([70.0, 0.027, 0.1, 32.0, 2.2])
SPREAD = np.array([0.3, 0.001, 0.05, 0.4, 0.1])


def readings(n: int, seed: int = 0, shift: float = 0.0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows = POINT + rng.normal(size=(n, len(POINT))) * SPREAD + shift * SPREAD
    return [dict(zip(SENSORS, map(float, row), strict=True)) for row in rows]


def settings(database: dict[str, Any], **devices: Any) -> Any:
    return make_settings(**database, devices={"baseline_readings": REQUIRED, **devices})


async def batch(
    client: httpx.AsyncClient, device: str, rows: list[dict[str, float]], model: str = "iot"
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/models/{model}/predict/batch",
        json={"instances": rows, "device_id": device, "version": BASELINES},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def admin_client() -> AsyncIterator[httpx.AsyncClient]:
    """A client with an admin's key, on an app with default test settings."""
    async with running_app(make_settings(), as_admin=True) as (_, client):
        yield client


async def test_calibration_progress_then_verdicts(database: dict[str, Any]) -> None:
    async with running_app(settings(database), as_admin=True) as (_, client):
        first = await batch(client, "pump-1", readings(3))
        assert first["device_id"] == "pump-1"
        assert [p["status"] for p in first["predictions"]] == ["calibrating"] * 3
        assert first["predictions"][2]["calibration"] == {"seen": 3, "required": REQUIRED}
        assert first["predictions"][0]["is_anomaly"] is None
        assert first["summary"]["calibrating"] == 3
        # The batch that completes calibration is scored after the baseline is made.
        second = await batch(client, "pump-1", readings(4, seed=1))
        assert [p["status"] for p in second["predictions"]] == ["calibrating"] * 2 + ["scored"] * 2
        assert second["predictions"][1]["calibration"] == {"seen": 5, "required": REQUIRED}
        assert all(isinstance(p["is_anomaly"], bool) for p in second["predictions"][2:])
        # A reading far from this device's own baseline is an anomaly, explained by it.
        one = await client.post(
            "/v1/models/iot/predict",
            json={"features": readings(1, shift=40.0)[0], "device_id": "pump-1", "version": "2"},
        )
        body = one.json()
        assert body["status"] == "scored" and body["is_anomaly"] is True
        assert "device's baseline" in body["explanation"]
        top = body["deviations"][0]
        assert abs(top["z_score"]) > 10
        # "expected" is this device's baseline, not the training data's mean.
        assert top["expected"] == pytest.approx(POINT[SENSORS.index(top["feature"])], rel=0.1)
        view = (await client.get("/v1/models/iot/devices/pump-1/baseline")).json()
        assert view["status"] == "ready" and view["source"] == "stream"
        assert view["calibration"] == {"seen": REQUIRED, "required": REQUIRED}
        assert set(view["baseline"]) == set(SENSORS)


async def test_seed_routes_take_device_id() -> None:
    """The seed routes name no version: a device goes to ``stable``'s per-device detector
    (version 3), which calibrates on the manifest's window, not the baseline setting."""
    config = make_settings(devices={"baseline_readings": 3})
    async with running_app(config, as_admin=True) as (_, client):

        async def one(row: dict[str, float]) -> dict[str, Any]:
            response = await client.post(
                "/predict",
                json={"sensor_data": row, "model_name": "lof", "device_id": "pump-7"},
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        first = await one(readings(1)[0])
        assert first["status"] == "calibrating"
        assert first["calibration"] == {"seen": 1, "required": 400}
        assert first["is_anomaly"] is None
        response = await client.post(
            "/predict/batch",
            json={"readings": readings(400, seed=1), "model_name": "lof", "device_id": "pump-7"},
        )
        body = response.json()
        assert body["device_id"] == "pump-7"
        statuses = [p["status"] for p in body["predictions"]]
        assert statuses == ["calibrating"] * 399 + ["scored"]
        last = await one(readings(1, seed=2)[0])
        assert last["status"] == "scored" and isinstance(last["is_anomaly"], bool)


async def test_without_device_id_nothing_changes(client: httpx.AsyncClient) -> None:
    rows = readings(4)
    now = await client.post("/v1/models/iot/predict/batch", json={"instances": rows})
    before = await client.post(
        "/v1/models/iot/predict/batch", json={"instances": rows}, params={"version": "1"}
    )
    assert now.status_code == before.status_code == 200
    for a, b in zip(now.json()["predictions"], before.json()["predictions"], strict=True):
        assert "status" not in a
        assert a.pop("prediction_id") != b.pop("prediction_id")  # one per scored row
        assert a == b
    seed = await client.post("/predict", json={"sensor_data": rows[0], "model_name": "lof"})
    assert "status" not in seed.json() and "device_id" not in seed.json()


async def test_baselines_survive_a_restart(database: dict[str, Any]) -> None:
    async with running_app(settings(database), as_admin=True) as (_, client):
        await batch(client, "pump-2", readings(REQUIRED))
        key = client.headers["X-API-Key"]
    async with running_app(settings(database)) as (_, client):
        client.headers["X-API-Key"] = key
        again = await batch(client, "pump-2", readings(2, seed=3))
        assert [p["status"] for p in again["predictions"]] == ["scored"] * 2


async def test_two_workers_share_calibration_and_resets(database: dict[str, Any]) -> None:
    config = settings(database, baseline_readings=40, cache_ttl_s=0.2)
    async with running_app(config, as_admin=True) as (_, a), running_app(config) as (_, b):
        b.headers["X-API-Key"] = a.headers["X-API-Key"]  # one account, two workers
        # Concurrent calibration through both workers: no reading lost or counted twice.
        rows = readings(8)
        results = await asyncio.gather(
            *(batch(c, "pump-3", rows) for c in (a, b, a, b, a, b, a, b))
        )
        statuses = [p["status"] for r in results for p in r["predictions"]]
        assert statuses.count("calibrating") == 40
        assert statuses.count("scored") == 24
        progress = sorted(
            p["calibration"]["seen"]
            for r in results
            for p in r["predictions"]
            if p["status"] == "calibrating"
        )
        assert progress == list(range(1, 41))
        # Scored through the other worker; a reset through one reaches the other.
        assert (await batch(b, "pump-3", readings(1)))["predictions"][0]["status"] == "scored"
        assert (await a.delete("/v1/models/iot/devices/pump-3/baseline")).status_code == 204
        await asyncio.sleep(0.25)
        after = await batch(b, "pump-3", readings(1))
        assert after["predictions"][0]["status"] == "calibrating"


async def test_upload_and_reset(database: dict[str, Any]) -> None:
    async with running_app(settings(database), as_admin=True) as (_, client):
        url = "/v1/models/iot-autoencoder/devices/line-4:pump.9/baseline"
        stats = {
            name: {"mean": float(m), "std": float(s)}
            for name, m, s in zip(SENSORS, POINT, SPREAD, strict=True)
        }
        put = await client.put(url, json={"baseline": stats})
        assert put.status_code == 200, put.text
        assert put.json()["source"] == "upload" and put.json()["status"] == "ready"
        scored = await batch(client, "line-4:pump.9", readings(2), model="iot-autoencoder")
        assert [p["status"] for p in scored["predictions"]] == ["scored"] * 2
        # Aliases of feature names are accepted too (the SKAB column names).
        put = await client.put(url, json={"readings": readings(10)})
        assert put.status_code == 200 and put.json()["calibration"]["seen"] == 10
        got = (await client.get(url)).json()
        assert got["baseline"]["flow_rate"]["mean"] == pytest.approx(POINT[3], abs=1.0)
        assert (await client.delete(url)).status_code == 204
        assert (await client.get(url)).status_code == 404
        assert (await client.delete(url)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"baseline": {"temperature": {"mean": 1.0, "std": 1.0}}}, "baseline"),
        ({"baseline": {"speed": {"mean": 1.0, "std": 1.0}}}, "baseline.speed"),
        ({"baseline": {"temperature": {"mean": 1.0, "std": 0}}}, "baseline.temperature.std"),
        ({"baseline": {"temperature": {"mean": "hot", "std": 1}}}, "baseline.temperature.mean"),
        ('{"baseline": {"temperature": {"mean": 1e400, "std": 1}}}', "baseline.temperature.mean"),
        ({"readings": [{"temperature": 1.0}]}, "readings"),
        ({"readings": [[1, 2, 3, 4, 5], [1, 2, 3, 4]]}, "readings[1]"),
        ({}, "body"),
    ],
)
async def test_bad_uploads_are_422_naming_the_field(body: Any, field: str) -> None:
    url = "/v1/models/iot/devices/d1/baseline"
    async with running_app(make_settings(), as_admin=True) as (_, client):
        if isinstance(body, str):
            # Raw JSON: 1e400 overflows a double. A strict parser alone would answer 400
            # "not valid JSON"; the number must reach validation, which names its field.
            response = await client.put(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        else:
            response = await client.put(url, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == field


async def test_uploads_need_admin_and_an_anomaly_model() -> None:
    async with running_app(make_settings(), as_admin=True) as (_, admin):
        ids = await admin.put("/v1/models/ids/devices/d1/baseline", json={"readings": [[0]]})
        assert ids.status_code == 422
        assert ids.json()["error"]["details"][0]["field"] == "model"
        no_device_model = await admin.post(
            "/v1/models/ids/predict", json={"features": [0.0] * 77, "device_id": "d1"}
        )
        assert no_device_model.status_code == 422
        old = await admin.post(
            "/v1/models/iot/predict",
            json={"features": readings(1)[0], "device_id": "d1", "version": "1"},
        )
        assert old.status_code == 422
        assert "device_baseline" in old.json()["error"]["message"]
        assert (await admin.get("/v1/models/iot/devices/d1/baseline")).status_code == 404
        del admin.headers["X-API-Key"]
        anonymous = await admin.delete("/v1/models/iot/devices/d1/baseline")
        assert anonymous.status_code in (401, 403)
        # Anonymous callers have no devices (test_owners.py).
        assert (await admin.get("/v1/models/iot/devices/d1/baseline")).status_code == 401


@pytest.mark.parametrize("device", ["", "a b", "x" * 129, "pump/1", 7, "é"])
async def test_bad_device_ids_are_422(admin_client: httpx.AsyncClient, device: Any) -> None:
    client = admin_client
    response = await client.post(
        "/v1/models/iot/predict/batch", json={"instances": readings(1), "device_id": device}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "device_id"
    seed = await client.post("/predict", json={"sensor_data": readings(1)[0], "device_id": device})
    assert seed.status_code == 422


async def test_bad_device_id_in_the_path_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/iot/devices/a%20b/baseline")
    assert response.status_code == 422
