"""Unexpected failures: a generic 500 envelope, the request id, no internals."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import yaml

from mlgate.api.app import create_app
from mlgate.registry.manifest import Manifest
from mlgate.registry.runtimes import LoadOptions, register_runtime
from tests.conftest import make_settings, running_app


async def test_unhandled_exception_is_a_generic_500() -> None:
    app = create_app(make_settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 at /secret/path")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal server error",
            "request_id": "req-500",
            "details": None,
        }
    }
    assert response.headers["x-request-id"] == "req-500"
    assert "hunter2" not in response.text


class FlakyRuntime:
    """Scores like a constant model, but fails on rows whose first value is 13."""

    input_dtype = np.dtype(np.float64)

    def __init__(self, artifact: Path, manifest: Manifest, options: LoadOptions) -> None:
        self.n_classes = len(manifest.classes)

    def run(self, x: np.ndarray) -> np.ndarray:
        if (x[:, 0] == 13).any():
            raise ValueError("internal detail: tensor shape mismatch in layer 7")
        return np.full((len(x), self.n_classes), 1.0 / self.n_classes)


async def test_model_failure_is_a_500_model_error_without_internals(model_repo: Path) -> None:
    register_runtime("flaky-test", FlakyRuntime)
    version_dir = model_repo / "ids" / "1"
    manifest = yaml.safe_load((version_dir / "manifest.yaml").read_text())
    manifest["runtime"] = "flaky-test"
    target = model_repo / "flaky" / "1"
    shutil.copytree(version_dir, target)
    manifest["name"] = "flaky"
    (target / "manifest.yaml").write_text(yaml.safe_dump(manifest))

    async with running_app(make_settings(models={"repository": model_repo})) as (_, client):
        ok = await client.post("/v1/models/flaky/predict", json={"features": [1.0] * 77})
        assert ok.status_code == 200
        response = await client.post("/v1/models/flaky/predict", json={"features": [13.0] * 77})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "model_error"
    assert "tensor" not in response.text and "layer 7" not in response.text
