"""A small classifier with a known reference, for drift and shadow tests.

Three features ``a``, ``b``, ``c`` whose training reference is the standard normal
distribution (quantiles p05..p95 of N(0, 1), no measured bin shares: for a continuous
feature the quantile probabilities are the shares); two classes, ``high`` when ``a > 0``
(probability ``sigmoid(a * scale)``), trained on a 50/50 class mix. The runtime
(``sensor-test``, registered on import) reads ``scale`` and optional ``fail`` / ``sleep_s``
from its artifact; those apply to calls with a non-zero ``b`` (not the warm-up).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from mlgate.registry.manifest import Manifest, sha256_file
from mlgate.registry.runtimes import LoadOptions, register_runtime

RUNTIME = "sensor-test"
FEATURES = ["a", "b", "c"]
PROBABILITIES = [0.05, 0.25, 0.50, 0.75, 0.95]
QUANTILES = {f"p{round(p * 100):02d}": p for p in PROBABILITIES}


class SensorRuntime:
    input_dtype = np.dtype(np.float64)

    def __init__(self, artifact: Path, manifest: Manifest, _: LoadOptions) -> None:
        spec = json.loads(artifact.read_text())
        self.scale = float(spec["scale"])
        self.fail = bool(spec.get("fail", False))
        self.sleep_s = float(spec.get("sleep_s", 0.0))

    def run(self, x: np.ndarray) -> np.ndarray:
        # The registry warms up on the reference mean (b == 0): never slowed nor failed.
        if np.any(x[:, 1] != 0):
            if self.sleep_s:
                time.sleep(self.sleep_s)
            if self.fail:
                raise RuntimeError("sensor-test model told to fail")
        p = 1.0 / (1.0 + np.exp(-x[:, 0] * self.scale))
        return np.column_stack([1.0 - p, p])


register_runtime(RUNTIME, SensorRuntime)


def write_sensor_model(repo: Path, version: str, *, name: str = "sensor", **spec: Any) -> Path:
    """``repo/name/version``: the sensor classifier (``scale`` 1 unless given)."""
    version_dir = repo / name / version
    version_dir.mkdir(parents=True, exist_ok=True)
    artifact = {"scale": 1.0, **spec}
    (version_dir / "model.json").write_text(json.dumps(artifact))
    normal = NormalDist()
    manifest = {
        "name": name,
        "version": version,
        "runtime": RUNTIME,
        "task": "classification",
        "artifact": "model.json",
        "artifact_sha256": sha256_file(version_dir / "model.json"),
        "features": [{"name": f} for f in FEATURES],
        "classes": ["low", "high"],
        "attack_classes": ["high"],
        "reference": {
            "mean": [0.0] * 3,
            "std": [1.0] * 3,
            "quantiles": {k: [normal.inv_cdf(p)] * 3 for k, p in QUANTILES.items()},
        },
        "provenance": {"class_counts": {"low": 500, "high": 500}},
    }
    (version_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return version_dir
