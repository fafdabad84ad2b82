"""Shed requests (a full model queue) and timed-out predictions are counted per model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from tests.conftest import make_settings, running_app
from tests.dataplane.test_batching import flow
from tests.dataplane.test_batching import slow_repo as slow_repo  # the fixture
from tests.observability.scrape import parse, total


async def test_shed_and_timed_out_requests_are_counted(slow_repo: Path) -> None:
    models = {"repository": slow_repo, "max_queue": 2}
    async with running_app(make_settings(models=models, metrics={"public": True})) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/models/slow/predict", json=flow(k)) for k in range(8))
        )
        samples = parse((await client.get("/metrics")).text)
    shed = sum(r.status_code == 503 for r in responses)
    assert shed >= 1
    assert total(samples, "mlgate_load_shed_total", model="slow") == shed
    assert total(samples, "mlgate_http_requests_total", status="503") == shed

    manifest_path = slow_repo / "slow" / "1" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["runtime_options"] = {"sleep_s": 1.0}
    manifest_path.write_text(yaml.safe_dump(manifest))
    models = {"repository": slow_repo, "prediction_timeout_s": 0.2}
    async with running_app(make_settings(models=models, metrics={"public": True})) as (_, client):
        assert (await client.post("/v1/models/slow/predict", json=flow(1))).status_code == 504
        samples = parse((await client.get("/metrics")).text)
    assert total(samples, "mlgate_timeouts_total", model="slow") == 1
