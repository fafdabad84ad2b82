"""Detections pushed out: a signed webhook to a real local receiver (killed mid-stream and
brought back) and an ECS JSON-lines file; per-model rules choose what leaves."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from mlgate.settings import Settings
from mlgate.sinks.delivery import DeliveryQueue
from mlgate.sinks.signing import sign, verify
from tests.conftest import make_settings, running_app
from tests.drift.sensor_model import write_sensor_model
from tests.sinks.receiver import Receiver

SECRET = secrets.token_urlsafe(32)
MIN_CONFIDENCE = 0.8


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver(SECRET.encode())
    await server.start()
    yield server
    if server._server is not None:
        await server.kill()


def sink_settings(repo: Path, receiver: Receiver | None, **sinks: Any) -> Settings:
    config: dict[str, Any] = {
        "rules": {"sensor": {"min_confidence": MIN_CONFIDENCE}},
        "retry_initial_s": 0.02,
        "retry_max_s": 0.2,
        "webhook_batch_size": 4,
        **sinks,
    }
    if receiver is not None:
        config.update(webhook_url=receiver.url, webhook_secret=SECRET)
    return make_settings(models={"repository": repo, "default_model": "sensor"}, sinks=config)


def sensor_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    return repo


def queues(app: Any) -> list[DeliveryQueue]:
    dispatcher = app.state.mlgate.signals.detections
    assert dispatcher is not None
    return list(dispatcher.queues)


async def predict(client: httpx.AsyncClient, rows: np.ndarray) -> list[str]:
    """Score ``rows``; the prediction ids of the rows that must leave (computed here:
    class "high" - a > 0 - with probability sigmoid(a) >= MIN_CONFIDENCE)."""
    response = await client.post(
        "/v1/models/sensor/predict/batch", json={"instances": rows.tolist()}
    )
    assert response.status_code == 200, response.text
    p_high = 1 / (1 + np.exp(-rows[:, 0]))
    predictions = response.json()["predictions"]
    return [
        p["prediction_id"]
        for p, p_ in zip(predictions, p_high, strict=True)
        if p_ >= MIN_CONFIDENCE
    ]


async def wait_delivered(app: Any, timeout_s: float = 20.0) -> None:
    for queue in queues(app):
        assert await queue.drain(timeout_s), queue.stats()


def stream(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, size=(n, 3))
    x[:, 1] = rng.uniform(0.5, 1.0, size=n)  # b != 0 (the sensor model's real calls)
    return x


async def test_every_detection_arrives_once_signed_through_a_receiver_outage(
    tmp_path: Path, receiver: Receiver
) -> None:
    ecs_file = tmp_path / "siem" / "detections.jsonl"
    settings = sink_settings(sensor_repo(tmp_path), receiver, ecs_file=ecs_file)
    expected: list[str] = []
    async with running_app(settings) as (app, client):
        for i in range(8):
            expected += await predict(client, stream(5, seed=i))
        await wait_delivered(app)
        arrived_before = len(receiver.event_ids())
        assert arrived_before == len(expected)
        # The receiver dies mid-stream: predictions go on, unhurt.
        await receiver.kill()
        for i in range(8, 16):
            expected += await predict(client, stream(5, seed=i))
        await asyncio.sleep(0.1)
        webhook = queues(app)[0]
        assert webhook.stats()["failed_attempts"] >= 1
        assert webhook.waiting > 0
        # It comes back on the same port: the queued detections arrive.
        await receiver.start()
        for i in range(16, 20):
            expected += await predict(client, stream(5, seed=i))
        await wait_delivered(app)
        stats = webhook.stats()
    assert len(expected) >= 10
    ids = receiver.event_ids()
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert all(d.genuine for d in receiver.deliveries)
    assert stats["delivered"] == len(expected) and stats["dropped"] == 0
    assert all(len(d.detections) <= 4 for d in receiver.deliveries)
    # The same detections, as ECS JSON lines.
    lines = [json.loads(line) for line in ecs_file.read_text().splitlines()]
    assert sorted(doc["event"]["id"] for doc in lines) == sorted(expected)
    doc = lines[0]
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["category"] == ["intrusion_detection"]
    assert doc["event"]["action"] == "attack-detected"
    assert doc["event"]["module"] == "mlgate" and doc["event"]["dataset"] == "mlgate.detections"
    assert doc["ecs"]["version"].startswith("8.")
    assert doc["@timestamp"].endswith("Z")
    assert doc["client"]["ip"] == "127.0.0.1"  # an anonymous caller's address
    ml = doc["mlgate"]
    assert ml["model"] == {"name": "sensor", "version": "1", "task": "classification"}
    assert ml["prediction_id"] == doc["event"]["id"]
    assert ml["predicted_class_name"] == "high" and ml["confidence"] >= MIN_CONFIDENCE
    assert doc["event"]["risk_score"] == pytest.approx(ml["confidence"] * 100, abs=1e-3)


async def test_a_slow_receiver_never_slows_a_prediction(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay_s = 0.5
    settings = sink_settings(sensor_repo(tmp_path), receiver, webhook_timeout_s=5)
    async with running_app(settings) as (app, client):
        expected = await predict(client, stream(20, seed=1))
        assert expected
        # Answered while the receiver still holds the first delivery.
        assert receiver.deliveries == []
        await wait_delivered(app)
    assert sorted(receiver.event_ids()) == sorted(expected)


async def test_a_full_queue_drops_and_counts_the_rest_arrive(
    tmp_path: Path, receiver: Receiver
) -> None:
    await receiver.kill()
    settings = sink_settings(sensor_repo(tmp_path), receiver, max_queue=6)
    async with running_app(settings) as (app, client):
        expected: list[str] = []
        for i in range(12):
            expected += await predict(client, stream(8, seed=10 + i))
        webhook = queues(app)[0]
        stats = webhook.stats()
        assert len(expected) > 6 + 4
        # Held: up to max_queue waiting plus one batch in delivery; the rest counted.
        assert stats["queued"] + stats["dropped"] == len(expected)
        assert stats["queued"] <= 6 + 4 and stats["dropped"] >= len(expected) - 10
        await receiver.start()
        await wait_delivered(app)
    ids = receiver.event_ids()
    assert len(ids) == len(set(ids)) == stats["queued"]
    assert set(ids) <= set(expected)
    # What was kept is the first of the stream, in order: drops hit the newest.
    assert ids == expected[: len(ids)]


async def test_a_receiver_that_refuses_is_not_retried_forever(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.secret = b"another secret that the receiver believes in!!"
    settings = sink_settings(sensor_repo(tmp_path), receiver)
    async with running_app(settings) as (app, client):
        expected = await predict(client, stream(20, seed=2))
        await wait_delivered(app)
        stats = queues(app)[0].stats()
    assert stats["refused"] == len(expected) and stats["delivered"] == 0
    assert [d.genuine for d in receiver.deliveries] == [False] * len(receiver.deliveries)


async def test_rules_choose_what_leaves(tmp_path: Path, model_repo: Path) -> None:
    """No rule: nothing leaves. A model.yaml rule; an anomaly model's verdicts; shadow
    answers never leave."""
    ecs_file = tmp_path / "detections.jsonl"
    repo = model_repo
    write_sensor_model(repo, "1")
    settings = make_settings(
        models={"repository": repo, "default_model": "sensor"},
        sinks={"ecs_file": ecs_file, "rules": {"iot": {}}},
    )
    write_sensor_model(repo, "2")
    (repo / "sensor" / "model.yaml").write_text(
        "aliases:\n  stable: '1'\n  shadow: '2'\ndetections:\n  classes: [low]\n"
    )
    async with running_app(settings) as (app, client):
        rows = stream(10, seed=3)
        response = await client.post(
            "/v1/models/sensor/predict/batch", json={"instances": rows.tolist()}
        )
        lows = [
            p["prediction_id"] for p in response.json()["predictions"] if p["predicted_class"] == 0
        ]
        await app.state.mlgate.signals.shadow.drain()
        normal = await client.post(
            "/v1/models/iot/predict", json={"features": [71.0, 0.21, 0.25, 32.0, 1.0]}
        )
        odd = await client.post(
            "/v1/models/iot/predict", json={"features": [120.0, 3.0, 9.0, 1.0, 50.0]}
        )
        assert normal.json()["is_anomaly"] is False and odd.json()["is_anomaly"] is True
        ids = await client.post("/v1/models/ids/predict", json={"features": [0.5] * 77})
        assert ids.status_code == 200
        await wait_delivered(app)
    docs = [json.loads(line) for line in ecs_file.read_text().splitlines()]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_model.setdefault(doc["mlgate"]["model"]["name"], []).append(doc)
    assert set(by_model) == {"sensor", "iot"}  # ids has no rule
    assert sorted(d["event"]["id"] for d in by_model["sensor"]) == sorted(lows)
    assert {d["mlgate"]["model"]["version"] for d in by_model["sensor"]} == {"1"}  # no shadow
    (anomaly,) = by_model["iot"]
    assert anomaly["event"]["id"] == odd.json()["prediction_id"]
    assert anomaly["event"]["action"] == "anomaly-detected"
    assert anomaly["mlgate"]["anomaly_score"] == odd.json()["anomaly_score"]


def test_signature_verification_rejects_forgeries_and_replays() -> None:
    secret = SECRET.encode()
    body = b'{"detections": []}'
    now = int(time.time())
    signature = sign(secret, str(now), body)
    assert verify(secret, str(now), signature, body)
    assert not verify(secret, str(now), signature, body + b" ")  # tampered body
    assert not verify(b"x" * 32, str(now), signature, body)  # another secret
    assert not verify(secret, str(now + 1), signature, body)  # another timestamp
    old = str(now - 600)
    assert not verify(secret, old, sign(secret, old, body), body)  # a replay, later
    assert not verify(secret, "soon", signature, body)


def test_a_webhook_needs_a_strong_secret() -> None:
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        Settings(sinks={"webhook_url": "https://siem.example/hook"})
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(sinks={"webhook_url": "https://siem.example/hook", "webhook_secret": "short"})
    with pytest.raises(ValidationError):
        Settings(sinks={"webhook_url": "ftp://siem.example/hook", "webhook_secret": SECRET})
