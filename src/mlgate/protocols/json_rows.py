"""JSON instances -> model input: what the v1, seed and baseline-upload shapes share.

An instance is either a positional list of numbers in the model's feature order or an
object mapping feature names (or their aliases) to numbers. Names the model does not
use are ignored and reported; a missing feature, a non-number, NaN, ±Infinity (unless
the feature's manifest rule replaces them) or a number the model's dtype cannot hold is
a 422 naming the offending field.

This runs on every request, so it avoids per-element objects: one pass of type checks,
then numpy (:func:`~mlgate.dataplane.validation.finalize`) for values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlgate.dataplane.types import InferenceInput
from mlgate.dataplane.validation import (
    OutOfRange,
    Problems,
    check_row_count,
    finalize,
    json_type,
    out_of_range_message,
)
from mlgate.registry.registry import ModelVersion

_NAN = float("nan")


class _Rows:
    """Rows being decoded, with what is needed to name their cells in messages."""

    def __init__(self, mv: ModelVersion, problems: Problems) -> None:
        self.mv = mv
        self.problems = problems
        self.rows: list[list[Any]] = []
        self.where: list[tuple[str, bool]] = []
        self.ignored: set[str] = set()
        self.sent: dict[tuple[int, int], str] = {}

    def name_cell(self, i: int, j: int) -> str:
        where, by_name = self.where[i]
        return f"{where}.{self.mv.manifest.features[j].name}" if by_name else f"{where}[{j}]"

    def _cell(self, value: Any, j: int, field: str) -> Any:
        """A value that is not a plain number: its stand-in, or None after a problem."""
        feature = self.mv.manifest.features[j]
        if value is None and feature.missing_value is not None:
            self.sent[(len(self.rows), j)] = "null"
            return _NAN
        if type(value) is OutOfRange:
            message = out_of_range_message(value.text, self.mv)
            self.problems.add(field, f"{message} (feature {feature.name!r})")
        else:
            self.problems.add(
                field, f"expected a number for {feature.name!r}, got {json_type(value)}"
            )
        return None

    def add_list(self, values: list[Any], where: str) -> None:
        n = self.mv.n_features
        if len(values) != n:
            self.problems.add(
                where, f"expected {n} features, got {len(values)}", expected=n, got=len(values)
            )
            return
        row = values
        for j, value in enumerate(values):
            kind = type(value)
            if kind is float or kind is int:
                continue
            if row is values:
                row = list(values)
            row[j] = self._cell(value, j, f"{where}[{j}]")
        self.rows.append(row)
        self.where.append((where, False))

    def add_mapping(self, values: dict[str, Any], where: str) -> None:
        mv = self.mv
        row: list[Any] = [None] * mv.n_features
        given = [False] * mv.n_features
        index = mv.feature_index
        for key, value in values.items():
            j = index.get(key)
            if j is None:
                self.ignored.add(key)
                continue
            if given[j]:
                self.problems.add(
                    f"{where}.{key}", f"feature {mv.manifest.features[j].name!r} given twice"
                )
                continue
            given[j] = True
            kind = type(value)
            row[j] = (
                value if kind is float or kind is int else self._cell(value, j, f"{where}.{key}")
            )
        missing = [mv.manifest.features[j].name for j, seen in enumerate(given) if not seen]
        if missing:
            shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
            self.problems.add(where, f"missing required features: {shown}", missing=missing)
            return
        self.rows.append(row)
        self.where.append((where, True))

    def add(self, instance: Any, where: str) -> None:
        if isinstance(instance, list):
            self.add_list(instance, where)
        elif isinstance(instance, dict):
            self.add_mapping(instance, where)
        else:
            self.problems.add(
                where, f"expected an array or object of features, got {json_type(instance)}"
            )

    def build(self, device_id: str | None) -> InferenceInput:
        self.problems.raise_if_any()
        matrix = np.array(self.rows, dtype=np.float64)
        done = finalize(matrix, self.mv, self.name_cell, self.problems, sent=self.sent)
        return InferenceInput(
            done.matrix,
            tuple(sorted(self.ignored)),
            done.substituted,
            done.substituted_total,
            device_id,
        )


def decode_instances(
    instances: Any,
    mv: ModelVersion,
    *,
    field: str = "instances",
    max_rows: int,
    paths: Sequence[str] | None = None,
    device_id: str | None = None,
) -> InferenceInput:
    """A JSON array of instances as model input (``paths`` names each in messages)."""
    problems = Problems()
    if not isinstance(instances, list):
        problems.add(field, f"expected an array of instances, got {json_type(instances)}")
        problems.raise_if_any()
    check_row_count(len(instances), field, max_rows)
    rows = _Rows(mv, problems)
    for i, instance in enumerate(instances):
        rows.add(instance, paths[i] if paths is not None else f"{field}[{i}]")
    return rows.build(device_id)


def decode_instance(
    features: Any, mv: ModelVersion, *, field: str = "features", device_id: str | None = None
) -> InferenceInput:
    """One JSON instance (array or object) as a one-row model input."""
    rows = _Rows(mv, Problems())
    rows.add(features, field)
    return rows.build(device_id)
