"""Input drift through HTTP on known data: the shifted feature - and only it - is flagged,
with Jensen-Shannon distance and PSI equal to values computed here independently; the
histograms add up across workers sharing a database."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from mlgate.drift.reference import reference_bins
from mlgate.drift.store import CountRow, DriftStore
from mlgate.registry.manifest import load_manifest
from mlgate.training.ids import clean_features, load_ids_dataset, split_ids
from tests.conftest import DATA_DIR, make_settings, running_app
from tests.drift.sensor_model import FEATURES, PROBABILITIES, write_sensor_model

EPSILON = 1e-4


def stream(n: int, shift: dict[str, float], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(FEATURES)))
    for name, delta in shift.items():
        x[:, FEATURES.index(name)] += delta
    return x


def expected_values(column: np.ndarray) -> tuple[float, float, list[float]]:
    """JS distance (base 2) and PSI of ``column`` against N(0, 1) cut at PROBABILITIES,
    computed without the server's code: scipy for JS, the textbook sum for PSI."""
    edges = [NormalDist().inv_cdf(p) for p in PROBABILITIES]
    bounds = [-np.inf, *edges, np.inf]
    live = np.array(
        [np.sum((column > lo) & (column <= hi)) for lo, hi in itertools.pairwise(bounds)]
    ) / len(column)
    reference = np.diff([0.0, *PROBABILITIES, 1.0])
    js = float(jensenshannon(live, reference, base=2))
    stability = 0.0
    for a, e in zip(live, reference, strict=True):
        a, e = max(a, EPSILON), max(e, EPSILON)
        stability += (a - e) * np.log(a / e)
    return js, stability, live.tolist()


def sensor_settings(repo: Path, **overrides: Any) -> Any:
    return make_settings(models={"repository": repo, "default_model": "sensor"}, **overrides)


async def send(client: httpx.AsyncClient, x: np.ndarray, path: str = "/v1/models/sensor") -> None:
    for start in range(0, len(x), 1000):
        chunk = x[start : start + 1000].tolist()
        response = await client.post(f"{path}/predict/batch", json={"instances": chunk})
        assert response.status_code == 200, response.text


async def test_a_shifted_feature_is_flagged_alone_with_known_values(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    x = stream(3000, {"b": 1.5})
    async with running_app(sensor_settings(repo)) as (_, client):
        await send(client, x)
        response = await client.get("/v1/models/sensor/drift", params={"window": "1h"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["rows"] == 3000 and report["enough_rows"] is True
    assert report["drifted_features"] == ["b"]
    assert report["method"]["reference"] == "manifest reference quantiles p05, p25, p50, p75, p95"
    for f, name in enumerate(FEATURES):
        js, stability, live = expected_values(x[:, f])
        got = report["features"][f]
        assert got["feature"] == name and got["rows"] == 3000
        assert got["js_distance"] == pytest.approx(js, abs=1e-6)
        assert got["psi"] == pytest.approx(stability, abs=1e-6)
        assert got["live_shares"] == pytest.approx(live, abs=1e-6)
        assert got["drifted"] is (name == "b")
    # Predicted classes: "high" exactly when a > 0; trained on 50/50.
    predictions = report["predictions"]
    high = int(np.sum(x[:, 0] > 0))
    assert predictions["counts"] == {"low": 3000 - high, "high": high}
    assert predictions["training_shares"] == {"low": 0.5, "high": 0.5}
    assert predictions["training_source"] == "provenance.class_counts"
    mix = np.array([3000 - high, high]) / 3000
    assert predictions["js_distance"] == pytest.approx(
        float(jensenshannon(mix, [0.5, 0.5], base=2)), abs=1e-6
    )
    assert predictions["drifted"] is False


async def test_a_shifted_class_mix_is_flagged(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    x = stream(500, {"a": 2.0}, seed=1)
    async with running_app(sensor_settings(repo)) as (_, client):
        await send(client, x)
        report = (await client.get("/v1/models/sensor/drift")).json()
    assert "a" in report["drifted_features"]
    assert report["predictions"]["drifted"] is True
    assert report["predictions"]["live_shares"]["high"] > 0.9


async def test_few_rows_are_reported_but_not_flagged(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    async with running_app(sensor_settings(repo)) as (_, client):
        await send(client, stream(20, {"b": 5.0}))
        report = (await client.get("/v1/models/sensor/drift")).json()
    assert report["rows"] == 20 and report["enough_rows"] is False
    assert report["features"][1]["js_distance"] > 0.5
    assert report["drifted_features"] == []


async def test_histograms_add_up_across_workers(database: dict[str, Any], tmp_path: Path) -> None:
    """Two apps (as two workers) on one database each count half of the stream."""
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    x = stream(2000, {"c": -2.0}, seed=2)
    settings = sensor_settings(repo, **database)
    async with running_app(settings) as (_, one), running_app(settings) as (_, two):
        await send(one, x[:1200])
        await send(two, x[1200:])
        report = (await one.get("/v1/models/sensor/drift")).json()
        # `one` flushed its own rows for the report; `two` flushes when it stops.
        assert report["rows"] == 1200
    async with running_app(settings) as (_, three):
        report = (await three.get("/v1/models/sensor/drift")).json()
    assert report["rows"] == 2000
    assert report["drifted_features"] == ["c"]
    js, stability, _ = expected_values(x[:, 2])
    assert report["features"][2]["js_distance"] == pytest.approx(js, abs=1e-6)
    assert report["features"][2]["psi"] == pytest.approx(stability, abs=1e-6)


async def test_versions_windows_and_bad_queries(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_sensor_model(repo, "1")
    write_sensor_model(repo, "2")
    async with running_app(sensor_settings(repo)) as (app, client):
        await send(client, stream(200, {}), path="/v1/models/sensor")  # latest: version 2
        v1 = (await client.get("/v1/models/sensor/drift", params={"version": "1"})).json()
        assert v1["version"] == "1" and v1["rows"] == 0
        assert v1["features"][0]["js_distance"] is None
        v2 = (await client.get("/v1/models/sensor/drift")).json()
        assert v2["version"] == "2" and v2["rows"] == 200
        # Windows that ended before the report's window are left out.
        store: DriftStore = app.state.mlgate.signals.drift_store
        bucket = app.state.mlgate.settings.drift.bucket_s
        old = (int(time.time()) // bucket - 48) * bucket  # two days ago
        await store.add([CountRow("sensor", "2", old, "@predicted", 0, 1000)])
        day = (await client.get("/v1/models/sensor/drift", params={"window": "24h"})).json()
        assert day["rows"] == 200
        week = (await client.get("/v1/models/sensor/drift", params={"window": "7d"})).json()
        assert week["rows"] == 1200
        for bad in ("abc", "0", "-1h", "400d", "1w"):
            response = await client.get("/v1/models/sensor/drift", params={"window": bad})
            assert response.status_code == 422, bad
            assert response.json()["error"]["code"] == "validation_error"
        assert (await client.get("/v1/models/nope/drift")).status_code == 404
        assert (
            await client.get("/v1/models/sensor/drift", params={"version": "9"})
        ).status_code == 404


async def test_held_out_cicids_flows_show_no_drift_on_the_bundled_ids() -> None:
    """The bundled reference measures its bin shares on the training flows, so the
    held-out flows of the same data drift nowhere (the estimate from the quantile
    probabilities alone would flag most of these count-like features)."""
    csv = DATA_DIR / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
    dataset = load_ids_dataset([csv])
    test_rows = clean_features(dataset.x)[split_ids(dataset.y, 0).test]
    async with running_app(make_settings()) as (app, client):
        mv = app.state.mlgate.registry.resolve("ids")
        response = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": test_rows.tolist()}
        )
        assert response.status_code == 200, response.text
        report = (await client.get("/v1/models/ids/drift")).json()
    assert report["rows"] == len(test_rows) == 757
    assert report["drifted_features"] == []
    assert report["predictions"]["training_source"] == "provenance.class_counts"
    assert report["predictions"]["drifted"] is False
    bins = reference_bins(load_manifest(mv.path))
    assert bins is not None
    counts = bins.counts(test_rows)
    shares = counts / len(test_rows)
    for f, feature in enumerate(report["features"]):
        assert feature["live_shares"] == pytest.approx(shares[f].tolist(), abs=1e-6)


async def test_anomaly_models_compare_verdicts_with_the_held_out_alarm_share() -> None:
    reading = {"temperature": 89.4, "vibration": 0.21, "pressure": 0.05, "flow_rate": 125.7}
    async with running_app(make_settings()) as (app, client):
        manifest = app.state.mlgate.registry.resolve("iot").manifest
        body = {"instances": [{**reading, "current": 2.5}] * 10}
        assert (await client.post("/v1/models/iot/predict/batch", json=body)).status_code == 200
        report = (await client.get("/v1/models/iot/drift")).json()
    share = manifest.metrics["alarm_share"]
    assert report["predictions"]["labels"] == ["normal", "anomaly"]
    assert report["predictions"]["training_source"] == "metrics.alarm_share"
    assert report["predictions"]["training_shares"] == pytest.approx(
        {"normal": 1 - share, "anomaly": share}, abs=1e-6
    )
    assert sum(report["predictions"]["counts"].values()) == 10
