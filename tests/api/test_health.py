"""Health, liveness and readiness."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

import mlgate
from mlgate.registry.manifest import Manifest
from mlgate.registry.runtimes import LoadOptions, register_runtime
from tests.conftest import make_settings, running_app


async def test_health_reports_version_uptime_and_models(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "healthy"
    assert body["version"] == mlgate.__version__
    assert body["uptime_seconds"] >= 0
    assert "ids" in body["models_loaded"]
    assert body["model_versions_loaded"] >= 5


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "alive"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"models": "ok", "database": "ok", "rate_limiter": "ok", "audit_log": "ok"},
    }


class SlowLoadingRuntime:
    """A model that takes a while to load, like a large one would."""

    input_dtype = np.dtype(np.float64)

    def __init__(self, artifact: Path, manifest: Manifest, options: LoadOptions) -> None:
        time.sleep(0.5)
        self.n_classes = len(manifest.classes)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), self.n_classes), 1.0 / self.n_classes)


async def test_ready_is_503_until_models_are_loaded(model_repo: Path) -> None:
    # Loading in the background: liveness answers at once, readiness waits for models.
    register_runtime("slow-test", SlowLoadingRuntime)
    manifest = yaml.safe_load((model_repo / "ids" / "1" / "manifest.yaml").read_text())
    manifest.update(name="slow", runtime="slow-test")
    (model_repo / "slow" / "1").mkdir(parents=True)
    shutil.copy(model_repo / "ids" / "1" / manifest["artifact"], model_repo / "slow" / "1")
    (model_repo / "slow" / "1" / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    settings = make_settings(models={"repository": model_repo, "load_in_background": True})
    async with running_app(settings) as (app, client):
        state = app.state.mlgate
        seen_not_ready = False
        for _ in range(1000):
            response = await client.get("/health/ready")
            if response.status_code == 503:
                seen_not_ready = True
                error = response.json()["error"]
                assert error["code"] == "not_ready"
                assert response.headers["retry-after"] == "1"
                predict = await client.post("/v1/models/ids/predict", json={"features": [0.0] * 77})
                if not state.registry.loaded_once:
                    assert predict.status_code == 503
            else:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/health/ready")).status_code == 200
        assert seen_not_ready, "readiness never reported loading"
        assert (await client.get("/health/live")).status_code == 200


async def test_ready_is_503_when_the_repository_is_missing(tmp_path: Path) -> None:
    settings = make_settings(models={"repository": tmp_path / "missing"})
    async with running_app(settings) as (_, client):
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert "does not exist" in response.json()["error"]["message"]
        assert (await client.get("/health")).json()["status"] == "starting"
        assert (await client.get("/health/live")).status_code == 200
