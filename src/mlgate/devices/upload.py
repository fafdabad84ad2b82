"""Checking a baseline upload: per-feature mean/std, or readings to compute them from."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlgate.dataplane.validation import OutOfRange, json_type, out_of_range_message
from mlgate.devices.store import std_floor
from mlgate.errors import ValidationFailed
from mlgate.protocols.json_rows import decode_instances
from mlgate.registry.registry import ModelVersion

MIN_READINGS = 2
#: Most readings one upload may carry (the body size limit applies too).
MAX_READINGS = 100_000


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def check_anomaly_model(mv: ModelVersion) -> None:
    """Device baselines exist for anomaly models only (a 422 naming ``model``)."""
    if mv.manifest.task != "anomaly":
        raise ValidationFailed(
            f"model {mv.name!r} is a {mv.manifest.task} model; device baselines are for "
            "anomaly models",
            details=[{"field": "model", "message": "not an anomaly model"}],
        )


def _from_stats(stats: Any, mv: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(stats, dict):
        raise _fail(
            "baseline", f"expected an object of feature name to mean/std, got {json_type(stats)}"
        )
    n = mv.n_features
    mean: list[float | None] = [None] * n
    std: list[float | None] = [None] * n
    for key, value in stats.items():
        j = mv.feature_index.get(key)
        where = f"baseline.{key}"
        if j is None:
            raise _fail(
                where, f"unknown feature; the model's features are {mv.manifest.feature_names}"
            )
        if mean[j] is not None:
            raise _fail(where, "feature given twice")
        if not isinstance(value, dict) or set(value) != {"mean", "std"}:
            raise _fail(where, "expected an object with exactly mean and std")
        for part in ("mean", "std"):
            v = value[part]
            if type(v) is OutOfRange:
                raise _fail(f"{where}.{part}", out_of_range_message(v.text, mv))
            if type(v) not in (int, float) or not math.isfinite(v):
                raise _fail(f"{where}.{part}", f"expected a finite number, got {v!r}")
        if value["std"] <= 0:
            raise _fail(f"{where}.std", f"std must be > 0, got {value['std']!r}")
        mean[j], std[j] = float(value["mean"]), float(value["std"])
    missing = [mv.manifest.features[j].name for j in range(n) if mean[j] is None]
    if missing:
        raise _fail("baseline", f"missing features: {', '.join(missing)}")
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)


def parse_upload(body: dict[str, Any], mv: ModelVersion) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, std, readings behind them) from ``{"baseline": {...}}`` or
    ``{"readings": [...]}``; a 422 that names the offending field otherwise."""
    check_anomaly_model(mv)
    if ("baseline" in body) == ("readings" in body):
        raise _fail("body", "send exactly one of baseline (per-feature mean/std) or readings")
    if "baseline" in body:
        mean, std = _from_stats(body["baseline"], mv)
        return mean, std, 0
    readings = body["readings"]
    if not isinstance(readings, list) or len(readings) < MIN_READINGS:
        raise _fail("readings", f"expected an array of at least {MIN_READINGS} readings")
    decoded = decode_instances(readings, mv, field="readings", max_rows=MAX_READINGS)
    x = decoded.matrix.astype(np.float64)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), std_floor(mean))
    return mean, std, len(x)
