"""The prediction cache through HTTP, on both backends: hits are the misses' bytes,
inputs that mean the same rows share an entry whatever the wire shape, and an answer
never crosses versions nor survives a reload of its version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml

from mlgate.dataplane import InferenceEvent
from tests.api.gated_model import Gate, write_gated_model
from tests.api.test_oip import binary_request
from tests.conftest import make_settings, running_app

ROW = [float(v) for v in np.linspace(0.0, 300.0, 77)]
READING = {
    "temperature": 89.4,
    "vibration": 0.21,
    "pressure": 0.05,
    "flow_rate": 125.7,
    "current": 2.5,
}
#: Fields that differ between two answers to the same request, whatever the cache.
VOLATILE = {"request_id", "timestamp", "processing_time_ms", "prediction_id", "prediction_ids"}


def cached_app(cache_settings: dict[str, Any], cached: list[str], **overrides: Any) -> Any:
    cache = {**cache_settings["cache"], "models": cached}
    settings = make_settings(**{**cache_settings, "cache": cache, **overrides})
    return running_app(settings, as_admin=True)


def _volatile_pairs(a: Any, b: Any, found: list[tuple[str, Any, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key in VOLATILE:
                found.append((key, a[key], b.get(key)))
            elif key in b:
                _volatile_pairs(a[key], b[key], found)
    elif isinstance(a, list) and isinstance(b, list):
        for x, y in zip(a, b, strict=False):
            _volatile_pairs(x, y, found)


def json_part(response: httpx.Response) -> bytes:
    length = response.headers.get("inference-header-content-length")
    return response.content[: int(length)] if length else response.content


def assert_same_bytes(miss: httpx.Response, hit: httpx.Response) -> None:
    """``hit``'s body is ``miss``'s byte for byte once each per-request field (request
    id, time, processing time, prediction ids) is given ``miss``'s value."""
    assert miss.headers["x-cache"] == "MISS" and hit.headers["x-cache"] == "HIT"
    assert miss.headers["content-type"] == hit.headers["content-type"]
    pairs: list[tuple[str, Any, Any]] = []
    _volatile_pairs(orjson.loads(json_part(hit)), orjson.loads(json_part(miss)), pairs)
    assert pairs, "no per-request field found"
    body = hit.content
    for key, hit_value, miss_value in pairs:
        old = f'"{key}":'.encode() + orjson.dumps(hit_value)
        assert old in body
        body = body.replace(old, f'"{key}":'.encode() + orjson.dumps(miss_value), 1)
    assert body == miss.content


async def twice(client: httpx.AsyncClient, path: str, **kwargs: Any) -> list[httpx.Response]:
    responses = [await client.post(path, **kwargs) for _ in range(2)]
    for response in responses:
        assert response.status_code == 200, response.text
    return responses


REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/models/ids/predict", {"json": {"features": ROW}}),
    ("/v1/models/ids/predict/batch", {"json": {"instances": [ROW, ROW[::-1], [1.0] * 77]}}),
    ("/v1/models/iot/predict", {"json": {"features": READING}}),
    ("/v1/models/iot/predict/batch", {"json": {"instances": [READING, READING]}}),
    ("/predict", {"json": {"features": ROW}}),
    ("/predict/batch", {"json": [{"features": ROW}, {"features": [2.0] * 77}]}),
    ("/predict", {"json": {"sensor_data": READING}}),
    (
        "/v2/models/ids/infer",
        {"json": {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}]}},
    ),
    (
        "/v2/models/iot/infer",
        {
            "json": {
                "inputs": [
                    {"name": k, "shape": [1], "datatype": "FP64", "data": [v]}
                    for k, v in READING.items()
                ]
            }
        },
    ),
]


@pytest.mark.parametrize(("path", "request_kwargs"), REQUESTS)
async def test_a_hit_is_the_miss_byte_for_byte(
    cache_settings: dict[str, Any], path: str, request_kwargs: dict[str, Any]
) -> None:
    async with cached_app(cache_settings, ["ids", "iot"]) as (_, client):
        miss, hit = await twice(client, path, **request_kwargs)
        assert_same_bytes(miss, hit)


async def test_binary_tensors_hit_byte_for_byte(cache_settings: dict[str, Any]) -> None:
    x = np.abs(np.random.default_rng(3).normal(100, 50, size=(3, 77)))
    body, headers = binary_request(
        [("x", x.astype("<f8"), "FP64")], parameters={"binary_data_output": True}
    )
    async with cached_app(cache_settings, ["ids"]) as (_, client):
        miss, hit = await twice(client, "/v2/models/ids/infer", content=body, headers=headers)
        assert miss.headers["content-type"] == "application/octet-stream"
        assert_same_bytes(miss, hit)


async def test_same_rows_share_an_entry_whatever_the_wire_shape(
    cache_settings: dict[str, Any],
) -> None:
    async with cached_app(cache_settings, ["ids"]) as (app, client):
        names = app.state.mlgate.registry.resolve("ids").manifest.feature_names
        first = await client.post("/v1/models/ids/predict", json={"features": ROW})
        assert first.headers["x-cache"] == "MISS"
        named = await client.post(
            "/v1/models/ids/predict", json={"features": dict(zip(names, ROW, strict=True))}
        )
        seed = await client.post("/predict", json={"features": ROW})
        oip = await client.post(
            "/v2/models/ids/infer",
            json={"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}]},
        )
        negative_zero = await client.post(
            "/v1/models/ids/predict", json={"features": [-0.0, *ROW[1:]]}
        )
        for response in (named, seed, oip, negative_zero):
            assert response.status_code == 200, response.text
            assert response.headers["x-cache"] == "HIT", response.request.url
        probabilities = list(first.json()["probabilities"].values())
        assert list(named.json()["probabilities"].values()) == probabilities
        oip_out = {o["name"]: o["data"] for o in oip.json()["outputs"]}
        assert oip_out["probabilities"] == probabilities


async def test_a_batch_is_one_entry_not_one_per_row(cache_settings: dict[str, Any]) -> None:
    """Whole requests are cached: a row seen inside a batch is scored again alone."""
    async with cached_app(cache_settings, ["ids"]) as (_, client):
        batch = await client.post("/v1/models/ids/predict/batch", json={"instances": [ROW, ROW]})
        alone = await client.post("/v1/models/ids/predict", json={"features": ROW})
        assert batch.headers["x-cache"] == alone.headers["x-cache"] == "MISS"


async def test_answers_never_cross_versions(cache_settings: dict[str, Any]) -> None:
    async with cached_app(cache_settings, ["ids"]) as (_, client):
        v1_miss, v1_hit = await twice(client, "/v1/models/ids/predict", json={"features": ROW})
        assert v1_hit.json()["model_version"] == "3"  # stable
        v2 = await client.post(
            "/v1/models/ids/predict", json={"features": ROW}, params={"version": "2"}
        )
        assert v2.headers["x-cache"] == "MISS" and v2.json()["model_version"] == "2"
        assert v2.json()["probabilities"] != v1_miss.json()["probabilities"]
        # stable moves to 2: the default now means version 2, and gets version 2's answer.
        moved = await client.post(
            "/v1/admin/models/ids/aliases", json={"alias": "stable", "version": "2"}
        )
        assert moved.status_code == 200, moved.text
        after = await client.post("/v1/models/ids/predict", json={"features": ROW})
        assert after.json()["model_version"] == "2"
        assert after.json()["probabilities"] == v2.json()["probabilities"]


async def test_a_reloaded_version_never_serves_its_old_answers(
    cache_settings: dict[str, Any], tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    gate = Gate()
    write_gated_model(repo, "gated", "1", score=1.0, threshold=5.0, gate=gate)
    overrides = {"models": {"repository": repo, "default_model": "gated"}}
    async with cached_app(cache_settings, ["gated"], **overrides) as (_, client):
        body = {"features": [1.0, 2.0]}
        _, hit = await twice(client, "/v1/models/gated/predict", json=body)
        assert hit.headers["x-cache"] == "HIT" and hit.json()["anomaly_score"] == 1.0
        # The same version, rebuilt with another artifact and reloaded.
        write_gated_model(repo, "gated", "1", score=2.0, threshold=5.0, gate=gate)
        report = await client.post("/v1/admin/models/reload")
        assert report.json()["loaded"] == {"gated": ["1"]}
        fresh = await client.post("/v1/models/gated/predict", json=body)
        assert fresh.headers["x-cache"] == "MISS"
        assert fresh.json()["anomaly_score"] == 2.0
        again = await client.post("/v1/models/gated/predict", json=body)
        assert again.headers["x-cache"] == "HIT" and again.json()["anomaly_score"] == 2.0


async def test_cache_control_no_cache_and_no_store(cache_settings: dict[str, Any]) -> None:
    path, body = "/v1/models/ids/predict", {"features": ROW}
    async with cached_app(cache_settings, ["ids"]) as (_, client):
        stored = await client.post(path, json=body, headers={"Cache-Control": "no-store"})
        assert stored.headers["x-cache"] == "MISS"
        # no-store kept nothing: this is a miss too, and no-cache stores its answer...
        fresh = await client.post(path, json=body, headers={"Cache-Control": "max-age=0, no-cache"})
        assert fresh.headers["x-cache"] == "MISS"
        # ...which the next ordinary request reuses; no-cache never does.
        assert (await client.post(path, json=body)).headers["x-cache"] == "HIT"
        bypass = await client.post(path, json=body, headers={"Cache-Control": "no-cache"})
        assert bypass.headers["x-cache"] == "MISS"


async def test_off_unless_a_model_opts_in(model_repo: Path) -> None:
    async with running_app(make_settings(models={"repository": model_repo})) as (_, client):
        response = await client.post("/v1/models/ids/predict", json={"features": ROW})
        assert "x-cache" not in response.headers
    # model.yaml opts iot in; ids (not named anywhere) stays uncached.
    model_file = model_repo / "iot" / "model.yaml"
    declared = yaml.safe_load(model_file.read_text())
    model_file.write_text(yaml.safe_dump({**declared, "cache": {"ttl_s": 60}}))
    async with running_app(make_settings(models={"repository": model_repo})) as (app, client):
        ids = await client.post("/v1/models/ids/predict", json={"features": ROW})
        assert "x-cache" not in ids.headers
        miss, hit = await twice(client, "/v1/models/iot/predict", json={"features": READING})
        assert_same_bytes(miss, hit)
        assert app.state.mlgate.signals.cache.stats()["hits"] == 1


async def test_a_hit_is_still_an_inference_event(cache_settings: dict[str, Any]) -> None:
    events: list[InferenceEvent] = []

    class Recorder:
        def observe(self, event: InferenceEvent) -> None:
            events.append(event)

    async with cached_app(cache_settings, ["ids"]) as (app, client):
        app.state.mlgate.dataplane.add_observer(Recorder())
        _, hit = await twice(client, "/v1/models/ids/predict", json={"features": ROW})
    assert [e.cache_hit for e in events] == [False, True]
    assert events[1].request_id == hit.headers["x-request-id"]
    assert events[1].prediction_key != events[0].prediction_key
    np.testing.assert_array_equal(events[0].output.probabilities, events[1].output.probabilities)  # type: ignore[union-attr]


async def test_the_device_path_bypasses_the_cache(cache_settings: dict[str, Any]) -> None:
    async with cached_app(cache_settings, ["iot"]) as (_, client):
        body = {"instances": [READING] * 3, "device_id": "pump-1"}
        for _ in range(2):
            response = await client.post("/v1/models/iot/predict/batch", json=body)
            assert response.status_code == 200, response.text
            assert "x-cache" not in response.headers


async def test_oversized_requests_are_not_cached(cache_settings: dict[str, Any]) -> None:
    cache = {**cache_settings["cache"], "max_rows": 2}
    async with cached_app({**cache_settings, "cache": cache}, ["ids"]) as (_, client):
        body = {"instances": [ROW] * 3}
        responses = await twice(client, "/v1/models/ids/predict/batch", json=body)
        assert [r.headers["x-cache"] for r in responses] == ["MISS", "MISS"]


async def test_a_dead_redis_costs_a_miss_not_an_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        cache={"backend": "redis", "models": ["ids"], "redis_timeout_s": 0.2},
    )
    async with running_app(settings) as (app, client):
        for _ in range(3):
            response = await client.post("/v1/models/ids/predict", json={"features": ROW})
            assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
        assert app.state.mlgate.signals.cache.stats()["errors"] >= 1
