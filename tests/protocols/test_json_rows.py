"""Decoding JSON instances: positional and named instances, and every kind of bad value."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.errors import ValidationFailed
from mlgate.protocols.json_rows import decode_instance, decode_instances
from mlgate.registry.manifest import Manifest
from mlgate.registry.registry import ModelVersion


class ConstantRuntime:
    def __init__(self, dtype: Any) -> None:
        self.input_dtype = np.dtype(dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x))


def model_version(dtype: Any = np.float64) -> ModelVersion:
    manifest = Manifest(
        name="m",
        version="1",
        runtime="constant",
        task="anomaly",
        threshold=1.0,
        artifact="none",
        features=[
            {"name": "temperature", "aliases": ["Temperature"]},
            {"name": "vibration"},
            {"name": "current"},
        ],
    )
    index = {"temperature": 0, "Temperature": 0, "vibration": 1, "current": 2}
    return ModelVersion(
        manifest,
        ConstantRuntime(dtype),
        Path("."),
        (),
        datetime.now(UTC),
        1.0,
        True,
        index,
        None,
        None,
        None,
    )


def test_positional_and_named_give_the_same_row() -> None:
    mv = model_version()
    a = decode_instance([1.0, 2, 3.5], mv).matrix
    b = decode_instance({"current": 3.5, "Temperature": 1, "vibration": 2.0}, mv).matrix
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float64 and a.shape == (1, 3)


def test_unused_names_are_reported_not_rejected() -> None:
    parsed = decode_instance(
        {"temperature": 1, "vibration": 2, "current": 3, "state": "ok", "duty_cycle": 0.7},
        model_version(),
    )
    assert list(parsed.ignored) == ["duty_cycle", "state"]


def test_float32_models_get_float32_and_refuse_what_float32_cannot_hold() -> None:
    mv = model_version(np.float32)
    assert decode_instance([1.0, 2.0, 3.0], mv).matrix.dtype == np.float32
    with pytest.raises(ValidationFailed) as info:
        decode_instance([1.0, 1e39, 3.0], mv)
    assert info.value.details[0]["field"] == "features[1]"


def test_feature_given_twice_through_an_alias() -> None:
    with pytest.raises(ValidationFailed, match="given twice"):
        decode_instance(
            {"temperature": 1, "Temperature": 2, "vibration": 2, "current": 3}, model_version()
        )


def test_many_errors_are_collected_and_capped() -> None:
    instances = [["x", "y", "z"]] * 30
    with pytest.raises(ValidationFailed) as info:
        decode_instances(instances, model_version(), max_rows=1000)
    assert len(info.value.details) == 20
    assert "and 19 more" in info.value.message


@pytest.mark.parametrize("bad", [None, 5, "rows", {"a": 1}])
def test_instances_must_be_a_list(bad: Any) -> None:
    with pytest.raises(ValidationFailed, match="expected an array of instances"):
        decode_instances(bad, model_version(), max_rows=1000)


@pytest.mark.parametrize("bad", [None, 5, "1,2,3", True])
def test_an_instance_must_be_a_list_or_object(bad: Any) -> None:
    with pytest.raises(ValidationFailed, match="expected an array or object"):
        decode_instance(bad, model_version())
    with pytest.raises(ValidationFailed) as info:
        decode_instances([[1, 2, 3], bad], model_version(), max_rows=1000)
    assert info.value.details[0]["field"] == "instances[1]"


def test_non_finite_values_name_field_and_feature() -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_instances(
            [[1, 2, 3], {"temperature": 1, "vibration": float("nan"), "current": 1}],
            model_version(),
            max_rows=1000,
        )
    detail = info.value.details[0]
    assert detail["field"] == "instances[1].vibration"
    assert "NaN" in detail["message"]
