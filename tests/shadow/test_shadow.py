"""Shadow (challenger) versions: every request is scored again by the version the
model's ``shadow`` alias names, off the request path; the answer reaches observers
(marked shadow, with the served request's prediction key) and never the client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlgate.dataplane import ClassificationOutput, InferenceEvent
from mlgate.shadow.scorer import ShadowScorer
from tests.conftest import make_settings, running_app
from tests.drift.sensor_model import write_sensor_model

ROWS = [[0.5, 1.0, 0.0], [-1.0, 2.0, 3.0], [2.0, -1.0, 1.0]]


class Recorder:
    def __init__(self) -> None:
        self.events: list[InferenceEvent] = []

    def observe(self, event: InferenceEvent) -> None:
        self.events.append(event)


def repo_with_shadow(tmp_path: Path, shadow: dict[str, Any] | None = None) -> Path:
    """sensor 1 (served, scale 1) and 2 (the challenger, scale 3 and ``shadow``)."""
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    write_sensor_model(repo, "2", scale=3.0, **(shadow or {}))
    (repo / "sensor" / "model.yaml").write_text(
        yaml.safe_dump({"aliases": {"stable": "1", "shadow": "2"}})
    )
    return repo


def app(repo: Path, **shadow: Any) -> Any:
    settings = make_settings(
        models={"repository": repo, "default_model": "sensor"}, shadow=shadow or {}
    )
    return running_app(settings, as_admin=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def shadow_of(app_: Any) -> ShadowScorer:
    scorer = app_.state.mlgate.signals.shadow
    assert scorer is not None
    return scorer


async def test_shadow_answers_are_recorded_beside_the_served_ones_never_returned(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    async with app(repo_with_shadow(tmp_path)) as (app_, client):
        app_.state.mlgate.dataplane.add_observer(recorder)
        response = await client.post("/v1/models/sensor/predict/batch", json={"instances": ROWS})
        assert response.status_code == 200, response.text
        body = response.json()
        await shadow_of(app_).drain()
        oip = await client.post(
            "/v2/models/sensor/infer",
            json={"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP64", "data": ROWS}]},
        )
        assert oip.status_code == 200, oip.text
        await shadow_of(app_).drain()
    a = np.array(ROWS)[:, 0]
    # The client got version 1's answer, and nothing of version 2.
    assert body["model_version"] == "1"
    served = np.array(
        [[p["probabilities"]["low"], p["probabilities"]["high"]] for p in body["predictions"]]
    )
    np.testing.assert_allclose(served[:, 1], sigmoid(a), rtol=1e-12)
    assert '"2"' not in response.text and oip.json()["model_version"] == "1"
    # Observers saw each request twice: served, then shadow (same key and request id).
    assert [(e.version, e.shadow) for e in recorder.events] == [
        ("1", False),
        ("2", True),
        ("1", False),
        ("2", True),
    ]
    for served_event, shadow_event in (recorder.events[:2], recorder.events[2:]):
        assert shadow_event.prediction_key == served_event.prediction_key
        assert shadow_event.request_id == served_event.request_id
        assert shadow_event.principal == served_event.principal
        assert shadow_event.protocol == served_event.protocol
        assert shadow_event.rows == 3 and not shadow_event.cache_hit
        assert isinstance(shadow_event.output, ClassificationOutput)
        np.testing.assert_allclose(
            shadow_event.output.probabilities[:, 1], sigmoid(3 * a), rtol=1e-12
        )
    ids = [p["prediction_id"] for p in body["predictions"]]
    assert ids == [f"{recorder.events[0].prediction_key}-{i}" for i in range(3)]
    stats = shadow_of(app_).stats()
    assert stats["queued"] == stats["scored"] == 2 and stats["dropped"] == 0


async def test_a_slow_shadow_never_slows_the_request(tmp_path: Path) -> None:
    repo = repo_with_shadow(tmp_path, {"sleep_s": 1.0})
    recorder = Recorder()
    async with app(repo, timeout_s=0.2) as (app_, client):
        app_.state.mlgate.dataplane.add_observer(recorder)
        response = await client.post("/v1/models/sensor/predict", json={"features": ROWS[0]})
        assert response.status_code == 200
        # Answered while the shadow call is still running.
        scorer = shadow_of(app_)
        assert scorer.stats()["scored"] == 0 and scorer.stats()["timed_out"] == 0
        for _ in range(200):
            if scorer.stats()["timed_out"]:
                break
            await asyncio.sleep(0.01)
        assert scorer.stats()["timed_out"] == 1
    assert [e.shadow for e in recorder.events] == [False]


async def test_a_failing_shadow_never_fails_the_request(tmp_path: Path) -> None:
    repo = repo_with_shadow(tmp_path, {"fail": True})
    recorder = Recorder()
    async with app(repo) as (app_, client):
        app_.state.mlgate.dataplane.add_observer(recorder)
        for _ in range(3):
            response = await client.post("/v1/models/sensor/predict", json={"features": ROWS[1]})
            assert response.status_code == 200 and response.json()["model_version"] == "1"
        await shadow_of(app_).drain()
        assert shadow_of(app_).stats()["failed"] == 3
    assert [e.shadow for e in recorder.events] == [False, False, False]


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    repo = repo_with_shadow(tmp_path, {"sleep_s": 0.3})
    async with app(repo, max_queue=1, timeout_s=5) as (app_, client):
        for _ in range(6):
            response = await client.post("/v1/models/sensor/predict", json={"features": ROWS[2]})
            assert response.status_code == 200
        stats = shadow_of(app_).stats()
        # One in the model, one waiting, the rest dropped.
        assert stats["queued"] + stats["dropped"] == 6
        assert stats["dropped"] >= 4
        await shadow_of(app_).drain()
        assert shadow_of(app_).stats()["scored"] == stats["queued"]


async def test_the_admin_api_names_and_removes_a_shadow(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    write_sensor_model(repo, "2", scale=3.0)
    (repo / "sensor" / "model.yaml").write_text(yaml.safe_dump({"aliases": {"stable": "1"}}))
    recorder = Recorder()
    async with app(repo) as (app_, client):
        app_.state.mlgate.dataplane.add_observer(recorder)
        body = {"features": ROWS[0]}

        async def predict(**params: str) -> None:
            response = await client.post("/v1/models/sensor/predict", json=body, params=params)
            assert response.status_code == 200
            await shadow_of(app_).drain()

        await predict()
        moved = await client.post(
            "/v1/admin/models/sensor/aliases", json={"alias": "shadow", "version": "2"}
        )
        assert moved.status_code == 200, moved.text
        await predict()
        # A request to the shadow version itself is not shadowed again.
        await predict(version="2")
        removed = await client.delete("/v1/admin/models/sensor/aliases/shadow")
        assert removed.status_code == 200 and "shadow" not in removed.json()["aliases"]
        await predict()
    assert [(e.version, e.shadow) for e in recorder.events] == [
        ("1", False),
        ("1", False),
        ("2", True),
        ("2", False),
        ("1", False),
    ]


async def test_a_shadow_takes_its_features_by_name(tmp_path: Path) -> None:
    repo = repo_with_shadow(tmp_path)
    # Version 2 wants its features in another order; version 3 wants one that 1 lacks.
    manifest_path = repo / "sensor" / "2" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["features"] = [{"name": "c"}, {"name": "a", "aliases": ["alpha"]}, {"name": "b"}]
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    recorder = Recorder()
    async with app(repo) as (app_, client):
        app_.state.mlgate.dataplane.add_observer(recorder)
        await client.post("/v1/models/sensor/predict/batch", json={"instances": ROWS})
        await shadow_of(app_).drain()
    shadow = recorder.events[1]
    assert shadow.shadow and shadow.inputs.matrix.tolist() == [[r[2], r[0], r[1]] for r in ROWS]
    # Its model reads column 0 (now "c"): the challenger answered on the reordered input.
    assert isinstance(shadow.output, ClassificationOutput)
    c = np.array(ROWS)[:, 2]
    np.testing.assert_allclose(shadow.output.probabilities[:, 1], sigmoid(3 * c), rtol=1e-12)


async def test_a_shadow_missing_a_feature_is_skipped_and_counted(tmp_path: Path) -> None:
    repo = repo_with_shadow(tmp_path)
    manifest_path = repo / "sensor" / "2" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["features"][2] = {"name": "d"}
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    recorder = Recorder()
    async with app(repo) as (app_, client):
        app_.state.mlgate.dataplane.add_observer(recorder)
        response = await client.post("/v1/models/sensor/predict", json={"features": ROWS[0]})
        assert response.status_code == 200
        await shadow_of(app_).drain()
        assert shadow_of(app_).stats()["incompatible"] == 1
    assert [e.shadow for e in recorder.events] == [False]
