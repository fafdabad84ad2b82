"""Structured logs carry the request context: request id, principal, model, version and
protocol, set once where each becomes known (never passed around as arguments)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from mlgate.logs import JSONFormatter
from mlgate.registry.manifest import Manifest
from mlgate.registry.runtimes import LoadOptions, register_runtime
from tests.conftest import create_admin_key, make_settings, running_app


class FailingRuntime:
    input_dtype = np.dtype(np.float64)

    def __init__(self, artifact: Path, manifest: Manifest, options: LoadOptions) -> None:
        self.n_classes = len(manifest.classes)

    def run(self, x: np.ndarray) -> np.ndarray:
        if (x[:, 0] == 13).any():  # the warm-up's typical row passes; this one fails
            raise ValueError("boom")
        return np.full((len(x), self.n_classes), 1.0 / self.n_classes)


@pytest.fixture
def json_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("mlgate")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


async def test_a_log_line_carries_request_principal_model_version_protocol(
    model_repo: Path, json_lines: list[str]
) -> None:
    register_runtime("failing-test", FailingRuntime)
    source = model_repo / "ids" / "1"
    target = model_repo / "failing" / "3"
    shutil.copytree(source, target)
    manifest = yaml.safe_load((target / "manifest.yaml").read_text())
    manifest.update(name="failing", version="3", runtime="failing-test")
    (target / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    settings = make_settings(models={"repository": model_repo}, auth={"anonymous_enabled": False})
    async with running_app(settings) as (app, client):
        key = await create_admin_key(app, "log-admin")
        response = await client.post(
            "/v2/models/failing/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": [13.0] * 77}]
            },
            headers={"X-API-Key": key, "X-Request-ID": "req-logs-1"},
        )
    assert response.status_code == 500
    records = [orjson.loads(line) for line in json_lines]
    (failure,) = [r for r in records if r["message"] == "model call failed"]
    assert failure["request_id"] == "req-logs-1"
    assert failure["principal"].startswith("key:")
    assert failure["model"] == "failing"
    assert failure["model_version"] == "3"
    assert failure["protocol"] == "oip"
    assert key not in "\n".join(json_lines)
