"""Per-device detectors through HTTP (issue 14 item 2): a version with ``device_detector``
(``iot`` version 3) calibrates each device's own detector on its first readings and
scores the rest with it. The served verdicts are the library's (``detectors.fit`` and
``detectors.score`` offline on the same readings), in one request or many, through one
app or two sharing a database; owners, shares, reset and bad input. Same tests on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import itertools
import math
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mlgate.cli.main import cli
from mlgate.devices import detectors
from mlgate.registry.manifest import DeviceDetectorSpec, load_manifest
from mlgate.settings import bundled_repository
from mlgate.training.iot import SKAB_COLUMNS, load_skab_file
from tests.api.test_oip import parse_binary_response
from tests.conftest import DATA_DIR, make_settings, running_app
from tests.devices.test_owners import caller

MODEL, VERSION = "iot", "3"
PREDICT = f"/v1/models/{MODEL}/predict/batch"
DETECTOR = f"/v1/models/{MODEL}/devices/{{}}/detector?version={VERSION}"
RUN = "other/1.csv"


@cache
def spec() -> DeviceDetectorSpec:
    detector = load_manifest(bundled_repository() / MODEL / VERSION).device_detector
    assert detector is not None
    return detector


@cache
def run() -> np.ndarray:
    """A real SKAB run: rows of the model's five sensors, in the model's feature order."""
    return load_skab_file(DATA_DIR / "skab" / RUN, RUN, labelled=False, columns=SKAB_COLUMNS).x


@cache
def offline() -> tuple[detectors.DeviceModel, detectors.Scored]:
    """The library on the same readings: fit on the calibration window, score the rest
    as one stream starting from the window's state."""
    columns = [
        ("temperature", "vibration", "pressure", "flow_rate", "current").index(f)
        for f in spec().features
    ]
    x = run()[:, columns]
    n = spec().calibration_readings
    params = detectors.DetectorParams.from_dict(spec().params)
    model = detectors.fit(x[:n], params)
    return model, detectors.score(model, x[n:], detectors.initial_state(model, x[:n]))


@pytest.fixture
def config(database: dict[str, Any], tmp_path: Path) -> Callable[[], Any]:
    """Settings on ``database`` serving only the ``iot`` model (a copy: quick to load)."""
    return lambda: make_settings(**database, models=iot_only(tmp_path))


def iot_only(tmp_path: Path) -> dict[str, Any]:
    target = tmp_path / "models"
    if not target.exists():
        shutil.copytree(bundled_repository() / MODEL, target / MODEL)
    return {"repository": str(target), "default_model": MODEL}


async def send(
    client: httpx.AsyncClient, device: str, rows: np.ndarray, **extra: Any
) -> list[dict[str, Any]]:
    response = await client.post(
        PREDICT,
        json={"instances": rows.tolist(), "device_id": device, "version": VERSION},
        **extra,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device_id"] == device
    return list(body["predictions"])


def check_against_the_library(predictions: list[dict[str, Any]]) -> None:
    """Calibration progress of the first readings; then exactly the library's alarms,
    its scores and its threshold."""
    n = spec().calibration_readings
    model, scored = offline()
    assert len(predictions) == len(run())
    calibrating, rest = predictions[:n], predictions[n:]
    assert [p["status"] for p in calibrating] == ["calibrating"] * n
    assert [p["calibration"]["seen"] for p in calibrating] == list(range(1, n + 1))
    assert all(p["is_anomaly"] is None for p in calibrating)
    assert [p["status"] for p in rest] == ["scored"] * len(rest)
    assert [p["is_anomaly"] for p in rest] == scored.alarms.tolist()
    served = np.array([p["anomaly_score"] for p in rest])
    np.testing.assert_allclose(served, scored.scores, rtol=1e-9, atol=0)
    assert {p["threshold"] for p in rest} == {model.threshold}
    # The run has anomalies and the detector finds some, so the comparison is not vacuous.
    assert 0 < scored.alarms.sum() < len(rest)


async def test_one_request_gives_the_librarys_verdicts(config: Callable[[], Any]) -> None:
    async with running_app(config(), as_admin=True) as (_, client):
        check_against_the_library(await send(client, "run-1", run()))
        view = (await client.get(DETECTOR.format("run-1"))).json()
        model, scored = offline()
        assert view["status"] == "ready" and view["version"] == VERSION
        assert view["calibration"] == {"seen": 400, "required": 400}
        assert view["features"] == spec().features and view["params"] == spec().params
        assert view["detector"]["method"] == spec().params["method"]
        assert view["detector"]["threshold"] == model.threshold
        scored_rows = len(run()) - 400
        assert view["stream"] == {
            "scored": scored_rows,
            "alarms": int(scored.alarms.sum()),
            "alarm": bool(scored.alarms[-1]),
        }


async def test_many_requests_continue_one_stream(config: Callable[[], Any]) -> None:
    """Uneven chunks, one crossing the end of calibration, single readings too."""
    x = run()
    edges = [0, 1, 2, 150, 399, 401, 402, 403, 430, 700, 701, len(x)]
    async with running_app(config(), as_admin=True) as (_, client):
        predictions: list[dict[str, Any]] = []
        for lo, hi in itertools.pairwise(edges):
            predictions += await send(client, "run-1", x[lo:hi])
        check_against_the_library(predictions)


async def test_two_apps_on_one_database_share_the_stream(config: Callable[[], Any]) -> None:
    """Two workers: readings alternate between them and still make the library's stream;
    sent at the same time, every calibration reading is counted once."""
    x = run()
    async with (
        running_app(config(), as_admin=True) as (_, a),
        running_app(config()) as (_, b),
    ):
        b.headers["X-API-Key"] = a.headers["X-API-Key"]  # one account, two workers
        chunks = np.array_split(x, 23)
        predictions: list[dict[str, Any]] = []
        for i, chunk in enumerate(chunks):
            predictions += await send((a, b)[i % 2], "run-1", chunk)
        check_against_the_library(predictions)
        # Concurrent calibration of another device through both apps.
        parts = np.array_split(x[:480], 12)
        results = await asyncio.gather(
            *(send((a, b)[i % 2], "run-2", part) for i, part in enumerate(parts))
        )
        flat = [p for r in results for p in r]
        seen = sorted(p["calibration"]["seen"] for p in flat if p["status"] == "calibrating")
        assert seen == list(range(1, 401))
        assert sum(p["status"] == "scored" for p in flat) == 80
        view = (await b.get(DETECTOR.format("run-2"))).json()
        assert view["stream"]["scored"] == 80


async def test_open_inference_protocol_gives_the_same_verdicts(
    config: Callable[[], Any],
) -> None:
    """The v2 (OIP) route with ``parameters.device_id``: calibration flags, then the
    library's alarms and scores."""
    x, n = run(), spec().calibration_readings
    async with running_app(config(), as_admin=True) as (_, client):
        outputs: dict[str, list[Any]] = {}
        for part in (x[:250], x[250:600], x[600:]):
            response = await client.post(
                f"/v2/models/{MODEL}/versions/{VERSION}/infer",
                json={
                    "inputs": [
                        {
                            "name": "x",
                            "shape": list(part.shape),
                            "datatype": "FP64",
                            "data": part.tolist(),
                        }
                    ],
                    "parameters": {"device_id": "run-1"},
                },
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["parameters"]["device_id"] == "run-1"
            for name, values in parse_binary_response(response).items():
                outputs.setdefault(name, []).extend(values.tolist())
    scored = offline()[1]
    assert outputs["calibrating"] == [True] * n + [False] * (len(x) - n)
    assert outputs["calibration_seen"][:n] == list(range(1, n + 1))
    assert outputs["is_anomaly"][n:] == scored.alarms.tolist()
    np.testing.assert_allclose(outputs["anomaly_score"][n:], scored.scores, rtol=1e-9, atol=0)


async def test_calibration_progress_and_views(config: Callable[[], Any]) -> None:
    async with running_app(config(), as_admin=True) as (_, client):
        assert (await client.get(DETECTOR.format("pump-1"))).status_code == 404
        first = await send(client, "pump-1", run()[:3])
        assert [p["status"] for p in first] == ["calibrating"] * 3
        assert first[2]["calibration"] == {"seen": 3, "required": 400}
        assert first[2]["explanation"] == "Calibrating the device detector (3 of 400 readings)"
        assert first[0]["anomaly_score"] is None and first[0]["threshold"] is None
        view = (await client.get(DETECTOR.format("pump-1"))).json()
        assert view["status"] == "calibrating" and "detector" not in view
        assert view["calibration"] == {"seen": 3, "required": 400}
        # One reading, through the single-reading route, also counts.
        one = await client.post(
            f"/v1/models/{MODEL}/predict",
            json={"features": run()[3].tolist(), "device_id": "pump-1", "version": VERSION},
        )
        assert one.status_code == 200, one.text
        assert one.json()["status"] == "calibrating"
        assert one.json()["calibration"] == {"seen": 4, "required": 400}
        assert one.json()["device_id"] == "pump-1"
        # Finish calibration; a scored reading is explained against the calibration.
        await send(client, "pump-1", run()[4:400])
        scored = await client.post(
            f"/v1/models/{MODEL}/predict",
            json={"features": run()[400].tolist(), "device_id": "pump-1", "version": VERSION},
        )
        body = scored.json()
        assert body["status"] == "scored" and isinstance(body["is_anomaly"], bool)
        assert math.isfinite(body["anomaly_score"]) and body["threshold"] > 0
        features = [d["feature"] for d in body["deviations"]]
        assert features and set(features) <= set(spec().features)  # not the unused sensor
        # The device's baseline (the version 2 path) is another thing: it has none.
        baseline = await client.get(f"/v1/models/{MODEL}/devices/pump-1/baseline")
        assert baseline.status_code == 404
        # The audit log records the detector's answers (calibration, then the verdict).
        log = await client.get("/v1/predictions", params={"model": MODEL, "limit": 500})
        assert log.status_code == 200, log.text
        records = [r for r in log.json()["predictions"] if r["device_id"] == "pump-1"]
        assert len(records) == 401
        last = records[0]  # newest first
        assert "calibration_seen" not in last
        assert last["is_anomaly"] == body["is_anomaly"]
        assert last["anomaly_score"] == body["anomaly_score"]
        assert last["threshold"] == body["threshold"]
        assert sorted(r["calibration_seen"] for r in records[1:]) == list(range(1, 401))


async def test_versions_without_a_detector_are_unchanged(config: Callable[[], Any]) -> None:
    async with running_app(config(), as_admin=True) as (_, client):
        # Version 2 calibrates a baseline, as before.
        old = await client.post(
            PREDICT, json={"instances": run()[:2].tolist(), "device_id": "pump-2", "version": "2"}
        )
        assert old.status_code == 200
        assert "baseline" in old.json()["predictions"][0]["explanation"]
        assert (await client.get(DETECTOR.format("pump-2"))).status_code == 404
        # The default version (stable, 3) calibrates the device's own detector.
        default = await client.post(
            PREDICT, json={"instances": run()[:2].tolist(), "device_id": "pump-9"}
        )
        assert default.status_code == 200
        explanation = default.json()["predictions"][1]["explanation"]
        assert explanation.startswith("Calibrating the device detector (2 of")
        assert (await client.get(DETECTOR.format("pump-9"))).status_code == 200
        # Without device_id, version 3 answers with its global detector.
        plain = await client.post(
            PREDICT, json={"instances": run()[:2].tolist(), "version": VERSION}
        )
        assert plain.status_code == 200
        assert all("status" not in p for p in plain.json()["predictions"])
        # The detector routes need a version that has detectors.
        no = await client.get(f"/v1/models/{MODEL}/devices/pump-2/detector?version=2")
        assert no.status_code == 422


async def test_another_owner_cannot_see_or_feed_a_device(config: Callable[[], Any]) -> None:
    async with running_app(config()) as (app, client):
        alice, mallory = await caller(app, "alice"), await caller(app, "mallory")
        admin = await caller(app, "root", admin=True)
        await send(client, "pump-3", run()[:10], headers=alice.headers)
        view = await client.get(DETECTOR.format("pump-3"), headers=mallory.headers)
        assert view.status_code == 404
        named = await client.get(
            DETECTOR.format("pump-3") + f"&owner={alice.owner}", headers=mallory.headers
        )
        assert named.status_code == 404
        # Mallory's readings go to a device of Mallory's own.
        theirs = await send(client, "pump-3", run()[:2], headers=mallory.headers)
        assert theirs[0]["calibration"]["seen"] == 1
        mine = (await client.get(DETECTOR.format("pump-3"), headers=alice.headers)).json()
        assert mine["owner"] == alice.owner and mine["calibration"]["seen"] == 10
        # An admin reads Alice's device by naming her.
        as_admin = await client.get(
            DETECTOR.format("pump-3") + f"&owner={alice.owner}", headers=admin.headers
        )
        assert as_admin.json()["calibration"]["seen"] == 10
        # A share makes Bob's "pump-3" Alice's device: his readings continue her stream.
        bob = await caller(app, "bob")
        share = await client.put(
            f"/v1/admin/device-shares/{bob.owner}/pump-3",
            json={"owner": alice.owner},
            headers=admin.headers,
        )
        assert share.status_code == 200, share.text
        shared = await send(client, "pump-3", run()[10:12], headers=bob.headers)
        assert [p["calibration"]["seen"] for p in shared] == [11, 12]
        seen = (await client.get(DETECTOR.format("pump-3"), headers=alice.headers)).json()
        assert seen["calibration"]["seen"] == 12


async def test_reset_starts_calibration_again(config: Callable[[], Any]) -> None:
    async with running_app(config()) as (app, client):
        user, admin = await caller(app, "user"), await caller(app, "root", admin=True)
        await send(client, "pump-4", run()[:401], headers=user.headers)
        url = DETECTOR.format("pump-4")
        assert (await client.delete(url, headers=user.headers)).status_code == 403
        mine = f"{url}&owner={user.owner}"
        assert (await client.delete(mine, headers=admin.headers)).status_code == 204
        assert (await client.get(url, headers=user.headers)).status_code == 404
        again = await send(client, "pump-4", run()[401:403], headers=user.headers)
        assert [p["calibration"]["seen"] for p in again] == [1, 2]
        assert (await client.delete(url, headers=admin.headers)).status_code == 404


async def test_a_changed_recipe_is_a_conflict_until_reset(
    config: Callable[[], Any], tmp_path: Path
) -> None:
    """A detector made with another recipe than the version now declares is not used:
    409 naming the reset, which starts calibration with the new recipe."""
    async with running_app(config(), as_admin=True) as (_, client):
        await send(client, "pump-5", run()[:5])
        path = Path(iot_only(tmp_path)["repository"]) / MODEL / VERSION / "manifest.yaml"
        manifest = yaml.safe_load(path.read_text())
        manifest["device_detector"]["params"]["margin"] = 2.0
        path.write_text(yaml.safe_dump(manifest))
        reload = await client.post("/v1/admin/models/reload")
        assert reload.status_code == 200, reload.text
        response = await client.post(
            PREDICT,
            json={"instances": run()[5:6].tolist(), "device_id": "pump-5", "version": VERSION},
        )
        assert response.status_code == 409, response.text
        assert "/v1/models/iot/devices/pump-5/detector" in response.json()["error"]["message"]
        assert (await client.delete(DETECTOR.format("pump-5"))).status_code == 204
        again = await send(client, "pump-5", run()[5:6])
        assert again[0]["calibration"]["seen"] == 1
        view = (await client.get(DETECTOR.format("pump-5"))).json()
        assert view["params"]["margin"] == 2.0


def test_mlgate_predict_streams_devices_through_their_detectors(tmp_path: Path) -> None:
    """``mlgate predict --device-column`` locally: the same verdicts as the library."""
    source = tmp_path / "run.csv"
    with (DATA_DIR / "skab" / RUN).open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    with source.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow([*rows[0], "pump"])
        writer.writerows([*row, "run-1"] for row in rows[1:])
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            "--model",
            MODEL,
            "--version",
            VERSION,
            "--input",
            str(source),
            "--delimiter",
            ";",
            "--device-column",
            "pump",
            "--output",
            str(out),
            "--no-progress",
        ],
        env={"MLGATE_MODELS__REPOSITORY": iot_only(tmp_path)["repository"]},
    )
    assert result.exit_code == 0, result.output
    with out.open(newline="") as fh:
        scored = list(csv.DictReader(fh))
    n = spec().calibration_readings
    assert [r["calibrating"] for r in scored] == ["true"] * n + ["false"] * (len(scored) - n)
    alarms = offline()[1].alarms.tolist()
    assert [r["is_anomaly"] == "true" for r in scored[n:]] == alarms


BAD_BODIES = [
    '{"instances": [[1.0, 2.0, 3.0, 4.0]], "device_id": "d", "version": "3"}',
    '{"instances": [[1.0, 2.0, NaN, 4.0, 5.0]], "device_id": "d", "version": "3"}',
    '{"instances": [[1.0, 2.0, "x", 4.0, 5.0]], "device_id": "d", "version": "3"}',
    '{"instances": [{"temperature": 1.0}], "device_id": "d", "version": "3"}',
    '{"instances": [[1.0, 2.0, 3.0, 4.0, 1e400]], "device_id": "d", "version": "3"}',
    '{"instances": [[1.0, 2.0, 3.0, 4.0, 5.0]], "device_id": "a b", "version": "3"}',
    '{"features": [1.0, 2.0, 3.0, 4.0, Infinity], "device_id": "d", "version": "3"}',
]


async def test_bad_input_is_422(tmp_path: Path) -> None:
    """Wrong feature count, NaN, ±Infinity, non-numbers, bad device ids: 422, and nothing
    stored for the device."""
    async with running_app(make_settings(models=iot_only(tmp_path)), as_admin=True) as (
        _,
        client,
    ):
        for body in BAD_BODIES:
            route = PREDICT if "instances" in body else f"/v1/models/{MODEL}/predict"
            response = await client.post(
                route, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, (body, response.text)
        assert (await client.get(DETECTOR.format("d"))).status_code == 404
        # Anonymous callers have no devices (as with baselines): 401.
        del client.headers["X-API-Key"]
        anonymous = await client.post(
            PREDICT,
            json={"instances": run()[:1].tolist(), "device_id": "d", "version": VERSION},
        )
        assert anonymous.status_code == 401


def alarm_url(device: str) -> str:
    return f"/v1/models/{MODEL}/devices/{device}/detector/alarm?version={VERSION}"


async def test_a_device_gets_its_own_alarm_settings(config: Callable[[], Any]) -> None:
    """PUT .../detector/alarm: a fitted detector takes its threshold again from its
    calibration scores and the stream goes on; a device not yet seen is fitted with them."""
    n = spec().calibration_readings
    x = run()
    async with running_app(config()) as (app, client):
        user, admin = await caller(app, "user"), await caller(app, "root", admin=True)
        await send(client, "tuned", x[: n + 50], headers=user.headers)
        view = (await client.get(DETECTOR.format("tuned"), headers=user.headers)).json()
        assert view["alarm_settings"] == "recipe"
        mine = f"&owner={user.owner}"
        settings = {"quantile": 1.0, "margin": 3.0}
        refused = await client.put(alarm_url("tuned"), json=settings, headers=user.headers)
        assert refused.status_code == 403
        response = await client.put(alarm_url("tuned") + mine, json=settings, headers=admin.headers)
        assert response.status_code == 200, response.text
        model, _ = offline()
        tuned = detectors.with_alarm(model, quantile=1.0, margin=3.0)
        assert tuned.threshold > model.threshold
        body = response.json()
        assert body["alarm_settings"] == "device"
        assert body["params"] == {**spec().params, **settings}
        assert body["detector"]["threshold"] == tuned.threshold
        assert body["stream"]["scored"] == 50  # not recalibrated
        later = await send(client, "tuned", x[n + 50 :], headers=user.headers)
        assert {p["threshold"] for p in later} == {tuned.threshold}
        # The same stream as the library with the new threshold from reading n + 50 on.
        _, before = offline()
        state = detectors.initial_state(model, x[:n, _columns()])
        head = detectors.score(model, x[n : n + 50, _columns()], state)
        tail = detectors.score(tuned, x[n + 50 :, _columns()], head.state)
        assert [p["is_anomaly"] for p in later] == tail.alarms.tolist()
        assert head.alarms.tolist() == before.alarms[:50].tolist()

        # A device that has sent nothing yet: fitted with its own settings.
        fresh = {"quantile": 0.95, "margin": 1.0}
        response = await client.put(alarm_url("fresh") + mine, json=fresh, headers=admin.headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "calibrating"
        assert response.json()["calibration"] == {"seen": 0, "required": n}
        served = await send(client, "fresh", x, headers=user.headers)
        params = detectors.DetectorParams.from_dict({**spec().params, **fresh})
        own = detectors.fit(x[:n, _columns()], params)
        expected = detectors.score(
            own, x[n:, _columns()], detectors.initial_state(own, x[:n, _columns()])
        )
        assert {p["threshold"] for p in served[n:]} == {own.threshold}
        assert [p["is_anomaly"] for p in served[n:]] == expected.alarms.tolist()
        assert own.threshold < model.threshold  # a lower quantile, no margin
        # A reset forgets them.
        assert (
            await client.delete(DETECTOR.format("fresh") + mine, headers=admin.headers)
        ).status_code == 204
        await send(client, "fresh", x[:1], headers=user.headers)
        again = (await client.get(DETECTOR.format("fresh"), headers=user.headers)).json()
        assert again["alarm_settings"] == "recipe" and again["params"] == spec().params


@pytest.mark.parametrize(
    "body",
    [
        {"quantile": 0.2, "margin": 1.0},
        {"quantile": 1.5, "margin": 1.0},
        {"quantile": 0.99, "margin": 0},
        {"quantile": 0.99},
        {"quantile": 0.99, "margin": 1.0, "smoothing": 3},
        {"quantile": "high", "margin": 1.0},
        [0.99, 1.0],
    ],
)
async def test_bad_alarm_settings_are_422(config: Callable[[], Any], body: Any) -> None:
    async with running_app(config(), as_admin=True) as (_, client):
        response = await client.put(alarm_url("pump-6"), json=body)
        assert response.status_code == 422, response.text
        assert set(response.json()) == {"error"}
        # A version without per-device detectors, and a bad device id.
        ok = {"quantile": 0.99, "margin": 1.0}
        no = await client.put(f"/v1/models/{MODEL}/devices/p/detector/alarm?version=2", json=ok)
        assert no.status_code == 422
        bad = await client.put(f"/v1/models/{MODEL}/devices/a%20b/detector/alarm", json=ok)
        assert bad.status_code == 422


def _columns() -> list[int]:
    return [
        ("temperature", "vibration", "pressure", "flow_rate", "current").index(f)
        for f in spec().features
    ]


def test_with_alarm_takes_the_threshold_from_the_calibration_scores() -> None:
    model, _ = offline()
    assert model.cross_scores is not None
    assert model.threshold == detectors.alarm_threshold(
        model.cross_scores, model.params.quantile, model.params.margin
    )
    same = detectors.with_alarm(model, quantile=model.params.quantile, margin=model.params.margin)
    assert same.threshold == model.threshold
    top = detectors.with_alarm(model, quantile=1.0, margin=1.0)
    assert top.threshold == pytest.approx(model.calibration_scores["max"])
    again = detectors.DeviceModel.from_dict(top.to_dict())
    assert again.threshold == top.threshold and again.params.quantile == 1.0
    with pytest.raises(ValueError, match="quantile"):
        detectors.with_alarm(model, quantile=0.1, margin=1.0)
    # Models stored before the scores were kept cannot be re-thresholded.
    old = model.to_dict()
    del old["cross_scores"]
    with pytest.raises(ValueError, match="reset it"):
        detectors.with_alarm(detectors.DeviceModel.from_dict(old), quantile=1.0, margin=1.0)
