"""Checks every codec shares: row counts, numbers a model accepts, substitution rules.

Codecs decode their wire shape into a float64 matrix (NaN standing for a missing
value) and call :func:`finalize`, which is the one place that

- replaces NaN / null / empty cells and ±Infinity by what the feature's manifest rule
  declares (``missing_value``, ``infinite_value``: what training did with such cells),
  and reports each substitution;
- refuses non-finite cells of features without a rule, and numbers beyond the range of
  the runtime's dtype, with a 422 that names the field and the feature;
- converts the matrix to the runtime's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from mlgate.dataplane.types import Substitution
from mlgate.errors import ValidationFailed
from mlgate.registry.registry import ModelVersion

MAX_REPORTED_ERRORS = 20
#: Substitutions reported per request (the count is always exact).
MAX_REPORTED_SUBSTITUTIONS = 100
#: How much of an offending value a message quotes.
MAX_QUOTED_CHARS = 40

#: Names a cell, for messages: (row, feature index) -> ``instances[3].Flow Duration``.
CellNamer = Callable[[int, int], str]


class OutOfRange:
    """A JSON number too large for a double (``1e400``, a 400-digit integer).

    The lenient JSON parser returns it instead of ``inf`` or a huge ``int``, so that
    validation can say the number is out of range rather than that it is Infinity.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"OutOfRange({quote(self.text)})"


def quote(text: str) -> str:
    """``text`` cut to a length fit for an error message."""
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 1] + "…"


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


class Problems:
    """Collects what is wrong with an input (the first few) and raises one 422."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, field: str, message: str, **extra: Any) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"field": field, "message": message, **extra})

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self, what: str = "input") -> None:
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise ValidationFailed(
                f"invalid {what}: {first['field']}: {first['message']}{more}",
                details=self.errors,
            )


def fail(field: str, message: str, **extra: Any) -> ValidationFailed:
    """A 422 about one field."""
    return ValidationFailed(
        f"invalid input: {field}: {message}",
        details=[{"field": field, "message": message, **extra}],
    )


def check_row_count(rows: int, field: str, max_rows: int) -> None:
    """A batch has at least one row and at most ``max_rows`` (422 otherwise)."""
    if rows == 0:
        raise ValidationFailed(
            f"{field} is empty: send at least one instance",
            details=[{"field": field, "message": "empty batch"}],
        )
    if rows > max_rows:
        raise ValidationFailed(
            f"{field} has {rows} instances, the maximum is {max_rows}: split the batch",
            details=[
                {"field": field, "message": "too many instances", "max": max_rows, "got": rows}
            ],
        )


def dtype_limit(mv: ModelVersion) -> float:
    """The largest magnitude the model's input dtype holds."""
    return float(np.finfo(mv.runtime.input_dtype).max)


def out_of_range_message(value: str | float, mv: ModelVersion) -> str:
    if isinstance(value, str):  # a JSON number that a double cannot hold
        return (
            f"{quote(value)} overflows to Infinity: beyond the model's numeric range "
            f"(±{dtype_limit(mv):g})"
        )
    return f"{value:g} is beyond the model's numeric range (±{dtype_limit(mv):g})"


class Finalized(NamedTuple):
    matrix: np.ndarray
    substituted: tuple[Substitution, ...]
    """The first :data:`MAX_REPORTED_SUBSTITUTIONS` substitutions."""
    substituted_total: int


def finalize(
    matrix: np.ndarray,
    mv: ModelVersion,
    name_cell: CellNamer,
    problems: Problems | None = None,
    *,
    sent: Mapping[tuple[int, int], str] | None = None,
) -> Finalized:
    """Apply substitution rules and range checks; the matrix in the runtime's dtype.

    ``matrix`` is float64 with NaN for missing cells; ``sent`` says what a NaN cell
    really held when it was not a NaN token (``null``, ``empty``). Raises the 422 of
    ``problems`` (with anything already collected in it) when a cell is refused.
    """
    problems = problems if problems is not None else Problems()
    substituted: tuple[Substitution, ...] = ()
    total = 0
    finite = np.isfinite(matrix)
    if not finite.all():
        matrix, substituted, total = _substitute(
            matrix, ~finite, mv, name_cell, problems, sent or {}
        )
    dtype = mv.runtime.input_dtype
    if dtype != np.float64 and not problems:
        limit = dtype_limit(mv)
        too_big = np.abs(matrix) > limit
        if too_big.any():
            for i, j in zip(*np.nonzero(too_big), strict=True):
                name = mv.manifest.features[j].name
                message = out_of_range_message(float(matrix[i, j]), mv)
                problems.add(name_cell(int(i), int(j)), f"{message} (feature {name!r})")
    problems.raise_if_any()
    if matrix.dtype != dtype:
        matrix = matrix.astype(dtype)
    return Finalized(matrix, substituted, total)


def _substitute(
    matrix: np.ndarray,
    bad: np.ndarray,
    mv: ModelVersion,
    name_cell: CellNamer,
    problems: Problems,
    sent: Mapping[tuple[int, int], str],
) -> tuple[np.ndarray, tuple[Substitution, ...], int]:
    features = mv.manifest.features
    matrix = matrix.copy()
    done: list[Substitution] = []
    total = 0
    # The few rows with a bad cell first: nonzero over the whole mask is ~4x slower.
    rows = np.flatnonzero(bad.any(axis=1))
    at_row, columns = np.nonzero(bad[rows])
    for i, j in zip(rows[at_row], columns, strict=True):
        row, col = int(i), int(j)
        value = float(matrix[row, col])
        feature = features[col]
        if math.isnan(value):
            token = sent.get((row, col), "NaN")
            rule = feature.missing_value
        else:
            token = "Infinity" if value > 0 else "-Infinity"
            rule = feature.infinite_value
        if rule is None:
            problems.add(name_cell(row, col), _refusal(token, feature.name))
            continue
        matrix[row, col] = rule
        total += 1
        if len(done) < MAX_REPORTED_SUBSTITUTIONS:
            done.append(Substitution(row, name_cell(row, col), feature.name, token, rule))
    return matrix, tuple(done), total


def _refusal(token: str, feature: str) -> str:
    if token in ("null", "empty"):
        what = "a missing value (null)" if token == "null" else "an empty cell"
        return f"{what} is not a number the model accepts (feature {feature!r})"
    return f"{token} is not a number the model accepts (feature {feature!r})"
