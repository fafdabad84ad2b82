"""Observers of the data plane: one event per answered request, from every protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlgate.dataplane import AnomalyOutput, ClassificationOutput, InferenceEvent
from tests.conftest import create_admin_key, make_settings, running_app

ROW = [0.5] * 77
READING = {
    "temperature": 89.4,
    "vibration": 0.21,
    "pressure": 0.05,
    "flow_rate": 125.7,
    "current": 2.5,
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[InferenceEvent] = []

    def observe(self, event: InferenceEvent) -> None:
        self.events.append(event)


class Broken:
    def observe(self, event: InferenceEvent) -> None:
        raise RuntimeError("observer bug")


REQUESTS: list[tuple[str, str, Any, str, str, int]] = [
    # protocol, path, body, model, task, rows
    ("v1", "/v1/models/ids/predict", {"features": ROW}, "ids", "classification", 1),
    (
        "v1",
        "/v1/models/ids/predict/batch",
        {"instances": [ROW, ROW, ROW]},
        "ids",
        "classification",
        3,
    ),
    ("v1", "/v1/models/iot/predict", {"features": READING}, "iot", "anomaly", 1),
    ("seed-rlids", "/predict", {"features": ROW}, "ids", "classification", 1),
    (
        "seed-rlids",
        "/predict/batch",
        [{"features": ROW}, {"features": ROW}],
        "ids",
        "classification",
        2,
    ),
    (
        "seed-iot",
        "/predict",
        {"sensor_data": READING, "model_name": "isolation_forest"},
        "iot-isolation-forest",
        "anomaly",
        1,
    ),
    ("seed-iot", "/predict/batch", {"readings": [READING] * 4}, "iot", "anomaly", 4),
    (
        "oip",
        "/v2/models/ids/versions/2/infer",
        {"inputs": [{"name": "x", "shape": [2, 77], "datatype": "FP32", "data": [ROW, ROW]}]},
        "ids",
        "classification",
        2,
    ),
    (
        "oip",
        "/v2/models/iot/infer",
        {
            "inputs": [
                {"name": name, "shape": [1], "datatype": "FP64", "data": [value]}
                for name, value in READING.items()
            ]
        },
        "iot",
        "anomaly",
        1,
    ),
]


@pytest.mark.parametrize(("protocol", "path", "body", "model", "task", "rows"), REQUESTS)
async def test_one_event_per_request_with_who_what_and_outputs(
    protocol: str, path: str, body: Any, model: str, task: str, rows: int
) -> None:
    recorder = Recorder()
    async with running_app(make_settings(auth={"anonymous_enabled": False})) as (app, client):
        app.state.mlgate.dataplane.add_observer(recorder)
        key = await create_admin_key(app, "observer-admin")
        response = await client.post(path, json=body, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
    assert len(recorder.events) == 1
    event = recorder.events[0]
    assert event.protocol == protocol
    assert event.model == model
    assert event.task == task
    expected_version = (
        "2" if "/versions/2/" in path else app.state.mlgate.registry.resolve(model).version
    )
    assert event.version == expected_version
    assert event.rows == rows == event.output.rows == event.inputs.rows
    assert event.request_id == response.headers["x-request-id"]
    assert event.principal is not None and event.principal.subject == "observer-admin"
    assert event.principal.kind == "api_key"
    assert 0 < event.latency_ms < 60_000
    if task == "classification":
        assert isinstance(event.output, ClassificationOutput)
        assert event.output.probabilities.shape == (rows, 7)
        np.testing.assert_allclose(event.output.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    else:
        assert isinstance(event.output, AnomalyOutput)
        assert event.output.scores.shape == (rows,)


async def test_no_event_for_a_refused_request() -> None:
    recorder = Recorder()
    async with running_app(make_settings()) as (app, client):
        app.state.mlgate.dataplane.add_observer(recorder)
        bad = await client.post("/v1/models/ids/predict", json={"features": [1, 2]})
        assert bad.status_code == 422
        missing = await client.post("/v1/models/nope/predict", json={"features": ROW})
        assert missing.status_code == 404
    assert recorder.events == []


async def test_a_failing_observer_never_fails_the_request() -> None:
    recorder = Recorder()
    async with running_app(make_settings()) as (app, client):
        app.state.mlgate.dataplane.add_observer(Broken())
        app.state.mlgate.dataplane.add_observer(recorder)
        response = await client.post("/v1/models/ids/predict", json={"features": ROW})
        assert response.status_code == 200
    assert len(recorder.events) == 1
    assert recorder.events[0].principal is not None
    assert recorder.events[0].principal.kind == "anonymous"


async def test_device_readings_carry_the_device_in_the_event() -> None:
    recorder = Recorder()
    async with running_app(make_settings(), as_admin=True) as (app, client):
        app.state.mlgate.dataplane.add_observer(recorder)
        response = await client.post(
            "/v1/models/iot/predict/batch",
            json={"instances": [READING] * 3, "device_id": "pump-7"},
        )
        assert response.status_code == 200, response.text
    (event,) = recorder.events
    assert event.device_id == "pump-7"
    assert isinstance(event.output, AnomalyOutput)
    assert event.output.scored is not None and not event.output.scored.any()
