"""Every scored row is recorded - who, what, a hash of the input, the output - off the
request path, and nothing accepted is lost: the queue's overflow is counted exactly and
what is queued at shutdown is written."""

from __future__ import annotations

import dataclasses
import logging
from hashlib import blake2b
from typing import Any

import numpy as np
import pytest

from mlgate.dataplane import InferenceEvent
from tests.audit.conftest import READING, ROW, AppFactory, AuditApp
from tests.dataplane.test_observers import Recorder
from tests.dataplane.test_prediction_ids import ids_in

FLOW = [float(i % 13) for i in range(77)]

CALLS: list[tuple[str, Any, str, str]] = [
    # path, body, model, protocol
    ("/v1/models/ids/predict/batch", {"instances": [ROW, FLOW, ROW]}, "ids", "v1"),
    ("/predict", {"features": FLOW}, "ids", "seed-rlids"),
    ("/predict/batch", {"readings": [READING, READING]}, "iot", "seed-iot"),
    (
        "/v2/models/ids/versions/2/infer",
        {"inputs": [{"name": "x", "shape": [2, 77], "datatype": "FP64", "data": [FLOW, ROW]}]},
        "ids",
        "oip",
    ),
]


def _outputs(path: str, body: Any) -> list[dict[str, Any]]:
    """The per-row answers a v1 or seed response carries."""
    if isinstance(body, list):
        return body
    if "predictions" in body:
        return list(body["predictions"])
    return [body]


def _hash(row: np.ndarray) -> str:
    return blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).hexdigest()


async def test_every_protocol_is_recorded_row_by_row(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        recorder = Recorder()
        a.app.state.mlgate.dataplane.add_observer(recorder)
        expected: dict[str, tuple[InferenceEvent, int, dict[str, Any] | None]] = {}
        for path, body, _, _ in CALLS:
            response = await a.client.post(path, json=body, headers=alice.with_key)
            assert response.status_code == 200, response.text
            event = recorder.events[-1]
            answers = _outputs(path, response.json()) if not path.startswith("/v2") else None
            for i, pid in enumerate(ids_in(path, response.json())):
                expected[pid] = (event, i, answers[i] if answers else None)
        records = {r["prediction_id"]: r for r in await a.list_all(alice.with_key)}

    assert set(records) == set(expected)
    for pid, (event, i, answer) in expected.items():
        record = records[pid]
        assert record["model"] == event.model
        assert record["model_version"] == event.version
        assert record["protocol"] == event.protocol
        assert record["request_id"] == event.request_id
        assert record["principal"] == f"key:{alice.key_id}"
        assert (record["user_id"], record["key_id"]) == (alice.user_id, alice.key_id)
        assert record["shadow"] is False and record["cache_hit"] is False
        assert record["latency_ms"] == pytest.approx(event.latency_ms)
        # The hash of the row as the model received it (its dtype), whatever the wire.
        assert record["input_hash"] == _hash(event.inputs.matrix[i])
        assert "inputs" not in record  # raw inputs are off by default
        assert record["feedback"] is None
        if event.task == "classification":
            probabilities = event.output.probabilities[i]  # type: ignore[union-attr]
            assert record["probabilities"] == pytest.approx(probabilities.tolist())
            assert record["predicted_class"] == int(np.argmax(probabilities))
            if answer is not None:
                assert record["predicted_class_name"] == answer["predicted_class_name"]
                assert record["confidence"] == pytest.approx(answer["confidence"])
                assert record["is_attack"] == answer["is_attack"]
        else:
            assert answer is not None
            assert record["is_anomaly"] == answer["is_anomaly"]
            assert record["anomaly_score"] == pytest.approx(answer["anomaly_score"])
            assert record["threshold"] == pytest.approx(event.output.threshold)  # type: ignore[union-attr]
    # The same flow sent positionally through v1, the seed shape and OIP hashes alike.
    flow_hashes = {
        records[pid]["input_hash"]
        for pid, (event, i, _) in expected.items()
        if event.model == "ids"
        and event.version == "2"
        and np.array_equal(
            event.inputs.matrix[i], np.asarray(FLOW, dtype=event.inputs.matrix.dtype)
        )
    }
    assert len(flow_hashes) == 1


async def test_raw_inputs_are_kept_only_for_the_models_configured(audit_app: AppFactory) -> None:
    async with audit_app(audit={"raw_input_models": ["iot"]}) as a:
        alice = await a.caller("alice")
        (reading,) = await a.predict(alice, "iot", [READING])
        (flow,) = await a.predict(alice, "ids", [FLOW])
        iot = (
            await a.client.get(
                f"/v1/predictions/{reading['prediction_id']}", headers=alice.with_key
            )
        ).json()
        ids = (
            await a.client.get(f"/v1/predictions/{flow['prediction_id']}", headers=alice.with_key)
        ).json()
    assert iot["inputs"] == pytest.approx(list(READING.values()))
    assert "inputs" not in ids


async def test_device_readings_record_their_calibration(audit_app: AppFactory) -> None:
    async with audit_app(devices={"baseline_readings": 3}) as a:
        alice = await a.caller("alice")
        response = await a.client.post(
            "/v1/models/iot/predict/batch",
            # Version 2: device baselines, calibrated by the setting above.
            json={"instances": [READING] * 4, "device_id": "pump-7", "version": "2"},
            headers=alice.with_key,
        )
        assert response.status_code == 200, response.text
        records = await a.list_all(alice.with_key)
    records.sort(key=lambda r: r["prediction_id"])
    assert [r["device_id"] for r in records] == ["pump-7"] * 4
    # The first three calibrate the device's baseline: no verdict, their progress kept.
    assert [r.get("calibration_seen") for r in records[:3]] == [1, 2, 3]
    assert [r["is_anomaly"] for r in records[:3]] == [None] * 3
    assert records[3]["is_anomaly"] in (True, False)
    assert records[3]["anomaly_score"] is not None


async def test_overflow_is_counted_exactly_and_the_queue_is_written_at_shutdown(
    audit_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The flusher never runs on its own here (a batch never fills, the interval is an
    # hour): the queue holds everything until the bound, and shutdown writes it.
    settings = {"queue_max_records": 10, "batch_records": 1000, "flush_interval_s": 3600}
    async with audit_app(audit=settings) as a:
        alice = await a.caller("alice")
        log = a.audit.log
        assert log is not None
        accepted: list[str] = []
        with caplog.at_level(logging.WARNING, logger="mlgate.audit"):
            for rows in (3, 3, 3, 3, 1, 1, 2):
                answers = await a.predict(alice, "ids", [ROW] * rows)
                accepted += [p["prediction_id"] for p in answers]
        # 3+3+3 fit, the 4th (3 rows) does not, 1 fits (10), then 1 and 2 do not.
        assert log.stats().depth == 10
        assert log.stats().overflow == 3 + 1 + 2
        assert log.stats().written == 0
        assert any("audit queue full" in r.getMessage() for r in caplog.records)
        admin_key = await _admin_key(a)
        # Reading flushes this worker's queue first.
        records = await a.list_all({"X-API-Key": admin_key})
        assert len(records) == 10
        dropped = set(accepted) - {r["prediction_id"] for r in records}
        assert len(dropped) == 6
        # Room again: recorded at shutdown without any read.
        (late,) = await a.predict(alice, "ids", [ROW])
        assert log.stats().depth == 1
    async with audit_app() as b:
        records = await b.list_all({"X-API-Key": await _admin_key(b, "admin2")})
    assert late["prediction_id"] in {r["prediction_id"] for r in records}
    assert len(records) == 11


async def test_shadow_records_sit_beside_the_served_one(audit_app: AppFactory) -> None:
    """A shadow version's answer for the same row (event.shadow, same prediction key) is
    a second record, shown with the served one and listed apart."""
    async with audit_app() as a:
        alice = await a.caller("alice")
        log = a.audit.log
        assert log is not None
        recorder = Recorder()
        a.app.state.mlgate.dataplane.add_observer(recorder)
        served = await a.predict(alice, "ids", [ROW, FLOW])
        event = recorder.events[-1]
        await a.client.post(
            "/v1/models/ids/predict/batch",
            json={"instances": [ROW, FLOW], "version": "2"},
            headers=alice.with_key,
        )
        challenger = recorder.events[-1]
        log.observe(
            dataclasses.replace(
                challenger, prediction_key=event.prediction_key, shadow=True, latency_ms=1.5
            )
        )
        pid = served[1]["prediction_id"]
        one = (await a.client.get(f"/v1/predictions/{pid}", headers=alice.with_key)).json()
        shadows = await a.list_all(alice.with_key, shadow="true")
        listed = await a.list_all(alice.with_key)
    assert one["model_version"] == event.version and one["shadow"] is False
    (shadow,) = one["shadow_records"]
    assert shadow["model_version"] == "2"
    assert shadow["probabilities"] == pytest.approx(challenger.output.probabilities[1].tolist())  # type: ignore[union-attr]
    assert {r["prediction_id"] for r in shadows} == {p["prediction_id"] for p in served}
    assert all(r["shadow"] for r in shadows)
    assert len(listed) == 4  # two served requests of two rows; shadows listed apart


async def _admin_key(a: AuditApp, name: str = "admin") -> str:
    accounts = a.app.state.mlgate.accounts
    user = await accounts.create_user(name, password=None, scopes=["admin"])
    return str((await accounts.create_key(user.id, name="tests")).plaintext)
