"""/metrics end to end: the Prometheus text (and OpenMetrics) of an app-owned registry,
guarded by the `metrics:read` scope, with predictions, routes (as templates), cache,
rate-limit refusals, batching and model load failures counted."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import REGISTRY

from tests.conftest import create_admin_key, make_settings, running_app
from tests.observability.scrape import parse, total

ROW = [0.5] * 77
V2_BODY = {"inputs": [{"name": "x", "shape": [2, 77], "datatype": "FP64", "data": ROW * 2}]}


async def scope_key(app: FastAPI, name: str, scopes: list[str], tier: str = "free") -> str:
    accounts = app.state.mlgate.accounts
    user = await accounts.create_user(name, password=None, scopes=scopes, tier=tier)
    return str((await accounts.create_key(user.id, name="k", scopes=scopes)).plaintext)


async def scrape(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_predictions_and_routes_are_counted_with_templates() -> None:
    async with running_app(make_settings(), as_admin=True) as (_, client):
        for _ in range(3):
            assert (await client.post("/v1/models/ids/predict", json={"features": ROW})).is_success
        batch = await client.post("/v1/models/ids/predict/batch", json={"instances": [ROW] * 4})
        assert batch.status_code == 200, batch.text
        assert (await client.post("/v2/models/ids/infer", json=V2_BODY)).status_code == 200
        assert (await client.get("/v1/models/ids")).status_code == 200
        assert (await client.get("/v1/models/nope")).status_code == 404
        assert (await client.get("/no/such/path")).status_code == 404
        assert (await client.request("BREW", "/v1/models")).status_code == 405
        samples = parse(await scrape(client))

    # Rows by outcome, per protocol: 3 single + 4 batched rows on v1, 2 on /v2.
    assert total(samples, "mlgate_predictions_total", model="ids", protocol="v1") == 7
    assert total(samples, "mlgate_predictions_total", model="ids", protocol="oip") == 2
    outcomes = {
        s.labels["outcome"] for s in samples if s.name == "mlgate_predictions_total" and s.value
    }
    assert outcomes and outcomes <= {
        "BENIGN",
        "Bot",
        "BruteForce",
        "DoS",
        "Infiltration",
        "PortScan",
        "WebAttack",
    }
    assert total(samples, "mlgate_inference_requests_total", model="ids", protocol="v1") == 4
    assert total(samples, "mlgate_inference_duration_seconds_count", model="ids") == 5

    # Hot routes and FastAPI routes alike, labelled with their templates.
    requests = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in samples
        if s.name == "mlgate_http_requests_total"
    }
    assert requests[("POST", "/v1/models/{model}/predict", "200")] == 3
    assert requests[("POST", "/v1/models/{model}/predict/batch", "200")] == 1
    assert requests[("POST", "/v2/models/{model}/infer", "200")] == 1
    assert requests[("GET", "/v1/models/{model}", "200")] == 1
    assert requests[("GET", "/v1/models/{model}", "404")] == 1
    assert requests[("GET", "unmatched", "404")] == 1
    assert requests[("other", "/v1/models", "405")] == 1  # methods are bounded too
    routes = {s.labels["route"] for s in samples if "route" in s.labels}
    assert not any("ids" in r or "nope" in r or "no/such" in r for r in routes), routes
    assert (
        total(
            samples,
            "mlgate_http_request_duration_seconds_count",
            route="/v1/models/{model}/predict",
        )
        == 3
    )
    assert total(samples, "mlgate_model_load_seconds", model="ids") > 0
    # Drift of the served version's features against its training reference.
    assert any(s.name == "mlgate_drift_score" and s.labels["model"] == "ids" for s in samples)
    # Never the process-global registry.
    assert REGISTRY.get_sample_value("mlgate_http_requests_total") is None


async def test_the_scope_guards_the_metrics() -> None:
    settings = make_settings(auth={"anonymous_enabled": False})
    async with running_app(settings) as (app, client):
        assert (await client.get("/metrics")).status_code == 401
        predictor = await scope_key(app, "predictor", ["predict", "models:read"])
        refused = await client.get("/metrics", headers={"X-API-Key": predictor})
        assert refused.status_code == 403
        assert refused.json()["error"]["details"]["required_scope"] == "metrics:read"
        scraper = await scope_key(app, "prometheus", ["metrics:read"])
        samples = parse(await scrape(client, **{"X-API-Key": scraper}))
        assert total(samples, "mlgate_http_requests_total", route="/metrics", status="403") == 1
        admin = await create_admin_key(app)
        await scrape(client, **{"X-API-Key": admin})
        # OpenMetrics when asked for.
        response = await client.get(
            "/metrics",
            headers={"X-API-Key": scraper, "Accept": "application/openmetrics-text; version=1.0.0"},
        )
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.rstrip().endswith("# EOF")


async def test_public_metrics_elsewhere_and_metrics_off() -> None:
    public = make_settings(
        auth={"anonymous_enabled": False}, metrics={"public": True, "path": "/internal/metrics"}
    )
    async with running_app(public) as (_, client):
        response = await client.get("/internal/metrics")
        assert response.status_code == 200
        parse(response.text)
        assert (await client.get("/metrics")).status_code == 404
    async with running_app(make_settings(metrics={"enabled": False}), as_admin=True) as (_, client):
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.post("/v1/models/ids/predict", json={"features": ROW})).is_success


async def test_cache_refusals_and_batches_are_counted() -> None:
    settings = make_settings(
        cache={"models": ["ids"]},
        rate_limit={"enabled": True},
        models={"batching": True, "batching_max_delay_ms": 20},
    )
    async with running_app(settings, as_admin=True) as (app, client):
        free = await scope_key(app, "freeuser", ["predict"], tier="free")
        headers = {"X-API-Key": free}
        codes = [
            (
                await client.post("/v1/models/ids/predict", json={"features": ROW}, headers=headers)
            ).status_code
            for _ in range(11)
        ]
        assert codes == [200] * 10 + [429]
        # Concurrent distinct rows (no cache hits) share model calls through the batcher.
        rows = [[float(i)] * 77 for i in range(1, 7)]
        answers = await asyncio.gather(
            *(client.post("/v1/models/ids/predict", json={"features": r}) for r in rows)
        )
        assert all(a.status_code == 200 for a in answers)
        samples = parse(await scrape(client))
    assert total(samples, "mlgate_rate_limit_refusals_total", tier="free", limit="requests") == 1
    # 10 identical rows: one miss, then hits; 6 distinct rows: misses.
    assert total(samples, "mlgate_cache_requests_total", model="ids", result="miss") == 7
    assert total(samples, "mlgate_cache_requests_total", model="ids", result="hit") == 9
    assert total(samples, "mlgate_queue_wait_seconds_count", model="ids") == 7
    batches = total(samples, "mlgate_batch_rows_count", model="ids")
    assert 2 <= batches < 7  # the 6 concurrent requests shared at least one call
    assert total(samples, "mlgate_batch_rows_sum", model="ids") == 7
    assert total(samples, "mlgate_principal_cache_requests_total", result="hit") >= 9


async def test_model_load_failures_are_counted(model_repo: Path) -> None:
    broken = model_repo / "ids" / "99"
    shutil.copytree(model_repo / "ids" / "1", broken)
    manifest = yaml.safe_load((broken / "manifest.yaml").read_text())
    manifest["version"] = "99"
    manifest["runtime"] = "no-such-runtime"
    (broken / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    settings = make_settings(models={"repository": model_repo})
    async with running_app(settings, as_admin=True) as (_, client):
        samples = parse(await scrape(client))
    assert total(samples, "mlgate_model_load_failures_total", model="ids") == 1
    assert total(samples, "mlgate_model_load_seconds", model="ids", version="99") == 0


@pytest.mark.parametrize("accepted", [True, False])
async def test_feedback_and_live_accuracy(accepted: bool) -> None:
    async with running_app(make_settings(), as_admin=True) as (_, client):
        answer = (await client.post("/v1/models/ids/predict", json={"features": ROW})).json()
        predicted = answer["predicted_class_name"]
        label = predicted if accepted else ("DoS" if predicted != "DoS" else "BENIGN")
        response = await client.post(
            f"/v1/predictions/{answer['prediction_id']}/feedback", json={"label": label}
        )
        assert response.status_code in (200, 201), response.text
        samples = parse(await scrape(client))
    version = answer["model_version"]
    assert total(samples, "mlgate_feedback_total", model="ids", version=version) == 1
    accuracy = total(samples, "mlgate_live_accuracy", model="ids", version=version)
    assert accuracy == (1.0 if accepted else 0.0)
