"""Turning request instances into a model's input matrix, with errors that name fields.

An instance is either a positional list of numbers in the model's feature order or an
object mapping feature names (or their aliases) to numbers. Names the model does not
use are ignored and reported; a missing feature, a non-number, NaN, ±Infinity or a
number the model's dtype cannot hold is a 422 that names the offending field.

This runs on every request, so it avoids per-element pydantic objects: one pass of
type checks in Python, then numpy for the range checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.errors import ValidationFailed
from mlgate.registry.registry import ModelVersion

MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True, slots=True)
class ParsedInput:
    """The model input and what the request carried that the model does not use."""

    matrix: np.ndarray
    ignored: list[str]


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "number"


class _Collector:
    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, field: str, message: str, **extra: Any) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"field": field, "message": message, **extra})

    def raise_if_any(self, what: str) -> None:
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise ValidationFailed(
                f"invalid {what}: {first['field']}: {first['message']}{more}",
                details=self.errors,
            )


def _check_list(
    values: list[Any], mv: ModelVersion, field: str, out: _Collector
) -> list[Any] | None:
    n = mv.n_features
    if len(values) != n:
        out.add(field, f"expected {n} features, got {len(values)}", expected=n, got=len(values))
        return None
    for j, value in enumerate(values):
        kind = type(value)
        if kind is not float and kind is not int:
            out.add(
                f"{field}[{j}]",
                f"expected a number for {mv.manifest.features[j].name!r}, got {json_type(value)}",
            )
    return values


def _check_mapping(
    values: dict[str, Any], mv: ModelVersion, field: str, out: _Collector, ignored: set[str]
) -> list[Any] | None:
    row: list[Any] = [None] * mv.n_features
    index = mv.feature_index
    for key, value in values.items():
        j = index.get(key)
        if j is None:
            ignored.add(key)
            continue
        if row[j] is not None:
            out.add(f"{field}.{key}", f"feature {mv.manifest.features[j].name!r} given twice")
            continue
        kind = type(value)
        if kind is not float and kind is not int:
            out.add(f"{field}.{key}", f"expected a number, got {json_type(value)}")
            row[j] = 0.0
            continue
        row[j] = value
    missing = [mv.manifest.features[j].name for j, v in enumerate(row) if v is None]
    if missing:
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        out.add(field, f"missing required features: {shown}", missing=missing)
        return None
    return row


def _check_range(
    matrix: np.ndarray, mv: ModelVersion, fields: Sequence[tuple[str, bool]], out: _Collector
) -> None:
    limit = float(np.finfo(mv.runtime.input_dtype).max)
    bad = ~np.isfinite(matrix) | (np.abs(matrix) > limit)
    if not bad.any():
        return
    for i, j in zip(*np.nonzero(bad), strict=True):
        value = float(matrix[i, j])
        name = mv.manifest.features[j].name
        if np.isnan(value):
            problem = "NaN is not a number the model accepts"
        elif np.isinf(value):
            problem = "Infinity is not a number the model accepts"
        else:
            problem = f"{value:g} is beyond the model's numeric range (±{limit:g})"
        where, by_name = fields[i]
        out.add(f"{where}.{name}" if by_name else f"{where}[{j}]", f"{problem} (feature {name!r})")


def parse_instances(
    instances: Any,
    mv: ModelVersion,
    field: str = "instances",
    paths: Sequence[str] | None = None,
) -> ParsedInput:
    """Validate a list of instances and build the input matrix for ``mv``.

    ``paths`` names each instance in error messages (default ``field[i]``).
    """
    out = _Collector()
    if not isinstance(instances, list):
        out.add(field, f"expected an array of instances, got {json_type(instances)}")
        out.raise_if_any("input")
    rows: list[list[Any]] = []
    fields: list[tuple[str, bool]] = []
    ignored: set[str] = set()
    for i, instance in enumerate(instances):
        where = paths[i] if paths is not None else f"{field}[{i}]"
        row: list[Any] | None
        if isinstance(instance, list):
            row = _check_list(instance, mv, where, out)
        elif isinstance(instance, dict):
            row = _check_mapping(instance, mv, where, out, ignored)
        else:
            out.add(where, f"expected an array or object of features, got {json_type(instance)}")
            row = None
        if row is not None:
            rows.append(row)
            fields.append((where, isinstance(instance, dict)))
    out.raise_if_any("input")
    matrix = np.array(rows, dtype=np.float64)
    _check_range(matrix, mv, fields, out)
    out.raise_if_any("input")
    if matrix.dtype != mv.runtime.input_dtype:
        matrix = matrix.astype(mv.runtime.input_dtype)
    return ParsedInput(matrix, sorted(ignored))


def parse_single(features: Any, mv: ModelVersion, field: str = "features") -> ParsedInput:
    """Validate one instance (list or object) and build a one-row matrix."""
    out = _Collector()
    ignored: set[str] = set()
    if isinstance(features, list):
        row = _check_list(features, mv, field, out)
    elif isinstance(features, dict):
        row = _check_mapping(features, mv, field, out, ignored)
    else:
        out.add(field, f"expected an array or object of features, got {json_type(features)}")
        row = None
    out.raise_if_any("input")
    matrix = np.array([row], dtype=np.float64)
    _check_range(matrix, mv, [(field, isinstance(features, dict))], out)
    out.raise_if_any("input")
    if matrix.dtype != mv.runtime.input_dtype:
        matrix = matrix.astype(mv.runtime.input_dtype)
    return ParsedInput(matrix, sorted(ignored))
