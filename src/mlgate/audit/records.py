"""Inference events as audit rows: the per-row work, done by the flusher, never by
``observe()``.

One event (one request) becomes one row per scored input row, in the column order of
:data:`COLUMNS`. Arrays are turned into Python values a column at a time (``tolist``),
not cell by cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from hashlib import blake2b
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson

from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput, InferenceEvent, Output

#: Column order of the rows :func:`event_rows` builds (and of COPY on PostgreSQL).
COLUMNS: tuple[str, ...] = (
    "request_key",
    "row_index",
    "shadow",
    "created_at",
    "request_id",
    "principal",
    "user_id",
    "key_id",
    "model",
    "version",
    "protocol",
    "task",
    "latency_ms",
    "device_id",
    "cache_hit",
    "input_hash",
    "predicted_class",
    "predicted",
    "confidence",
    "probabilities",
    "is_attack",
    "score",
    "is_anomaly",
    "threshold",
    "calibration_seen",
    "inputs",
)
#: Columns holding JSON, passed to the database as already-encoded text.
JSON_COLUMNS = frozenset({"probabilities", "inputs"})

Row = tuple[Any, ...]


def input_hashes(matrix: np.ndarray) -> list[str]:
    """BLAKE2b-128 (hex) of each row's bytes as the model received them (its dtype,
    C order): equal rows of one model version hash equal, whatever the wire format."""
    rows = np.ascontiguousarray(matrix)
    if rows.ndim != 2 or rows.shape[0] == 0:
        return []
    data = memoryview(rows.reshape(-1).view(np.uint8).data)
    step = rows.shape[1] * rows.itemsize
    return [
        blake2b(data[i * step : (i + 1) * step], digest_size=16).hexdigest()
        for i in range(rows.shape[0])
    ]


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _json_rows(matrix: np.ndarray) -> list[str]:
    """Each row as a JSON array (non-finite values as null)."""
    as_float = np.asarray(matrix, dtype=np.float64)
    if np.isfinite(as_float).all():
        return [orjson.dumps(row).decode() for row in as_float.tolist()]
    return [
        orjson.dumps([v if math.isfinite(v) else None for v in row]).decode()
        for row in as_float.tolist()
    ]


def _head(event: InferenceEvent) -> tuple[Any, ...]:
    """The columns every row of a request shares (shadow .. cache_hit)."""
    principal = event.principal
    return (
        event.shadow,
        datetime.fromtimestamp(event.timestamp, UTC),
        event.request_id,
        principal.log_id if principal is not None else None,
        principal.user_id if principal is not None else None,
        principal.key_id if principal is not None else None,
        event.model,
        event.version,
        event.protocol,
        event.task,
        float(event.latency_ms),
        event.device_id,
        event.cache_hit,
    )


def event_rows(
    event: InferenceEvent, classes: tuple[str, ...] | None, *, raw_inputs: bool
) -> list[Row]:
    """The audit rows of one answered request (``classes``: the version's class names,
    None when unknown)."""
    return _rows([event], event.inputs.matrix, event.output, classes, raw_inputs=raw_inputs)


def batch_rows(
    events: Sequence[InferenceEvent],
    class_names: Callable[[str, str], tuple[str, ...] | None],
    raw_inputs: Callable[[str], bool],
) -> list[Row]:
    """The audit rows of many requests. Consecutive requests to one model version are
    converted together - one ``concatenate`` and one ``tolist`` per column instead of
    one per request - which is most of the cost for single-row requests."""
    rows: list[Row] = []
    group_keys = [_group_key(event) for event in events]
    i = 0
    while i < len(events):
        first = events[i]
        j = i + 1
        if group_keys[i] is not None:
            while j < len(events) and group_keys[j] == group_keys[i]:
                j += 1
        group = events[i:j]
        classes = class_names(first.model, first.version)
        raw = raw_inputs(first.model)
        if len(group) == 1:
            rows += _rows(group, first.inputs.matrix, first.output, classes, raw_inputs=raw)
        else:
            matrix = np.concatenate([e.inputs.matrix for e in group])
            rows += _rows(group, matrix, _merged(group), classes, raw_inputs=raw)
        i = j
    return rows


def _group_key(event: InferenceEvent) -> tuple[Any, ...] | None:
    """Events with equal keys can be converted together (None: never grouped)."""
    out = event.output
    matrix = event.inputs.matrix
    if isinstance(out, ClassificationOutput):
        shape: tuple[Any, ...] = (out.probabilities.shape[1],)
    elif out.scored is None:  # not the device path (no calibration columns)
        shape = (out.threshold,)
    else:
        return None
    return (event.model, event.version, type(out), matrix.dtype, matrix.shape[1], *shape)


def _merged(events: Sequence[InferenceEvent]) -> Output:
    """The outputs of several requests of one group, as one output."""
    first = events[0].output
    if isinstance(first, ClassificationOutput):
        outputs = [e.output for e in events]
        return ClassificationOutput(
            probabilities=np.concatenate([o.probabilities for o in outputs]),  # type: ignore[union-attr]
            predicted=np.concatenate([o.predicted for o in outputs]),  # type: ignore[union-attr]
            confidence=np.concatenate([o.confidence for o in outputs]),
            is_attack=np.concatenate([o.is_attack for o in outputs]),  # type: ignore[union-attr]
        )
    anomalies = [e.output for e in events]
    return AnomalyOutput(
        scores=np.concatenate([o.scores for o in anomalies]),  # type: ignore[union-attr]
        is_anomaly=np.concatenate([o.is_anomaly for o in anomalies]),  # type: ignore[union-attr]
        confidence=np.concatenate([o.confidence for o in anomalies]),
        threshold=first.threshold,
        readings=np.empty((0, 0)),
        center=None,
        spread=None,
    )


def _rows(
    events: Sequence[InferenceEvent],
    matrix: np.ndarray,
    output: Output,
    classes: tuple[str, ...] | None,
    *,
    raw_inputs: bool,
) -> list[Row]:
    """Rows of ``events``, whose inputs and outputs are ``matrix`` and ``output`` (one
    request's, or several requests' concatenated in order)."""
    n = len(matrix)
    if n == 0:
        return []
    hashes = input_hashes(matrix)
    inputs: list[str | None] = [None] * n
    if raw_inputs:
        inputs = list(_json_rows(matrix))
    heads = [_head(event) for event in events]
    keys = [event.prediction_key for event in events]
    if n == len(events):  # one row per request: columns straight from the requests
        head_columns: list[Any] = list(zip(*heads, strict=True))
        row_index: list[int] = [0] * n
    else:
        counts = [event.rows for event in events]
        head_columns = [_repeat(column, counts) for column in zip(*heads, strict=True)]
        keys = _repeat(keys, counts)
        row_index = [r for c in counts for r in range(c)]
    # zip builds the row tuples in C: cheaper than a Python loop over rows.
    return list(
        zip(
            keys,
            row_index,
            *head_columns,
            hashes,
            *_output_columns(output, n, classes),
            inputs,
            strict=True,
        )
    )


def _repeat(values: Sequence[Any], counts: Sequence[int]) -> list[Any]:
    """Each value as many times as its count."""
    return list(chain.from_iterable(repeat(v, c) for v, c in zip(values, counts, strict=True)))


def _output_columns(out: Output, n: int, classes: tuple[str, ...] | None) -> list[list[Any]]:
    """predicted_class .. calibration_seen, one list per column."""
    none: list[Any] = [None] * n
    if isinstance(out, ClassificationOutput):
        predicted = out.predicted.tolist()
        names = (
            [classes[i] if 0 <= i < len(classes) else None for i in predicted]
            if classes is not None
            else none
        )
        probabilities = [orjson.dumps(p).decode() for p in out.probabilities.tolist()]
        return [
            predicted,
            names,
            _finite_or_none(out.confidence),
            probabilities,
            np.asarray(out.is_attack, dtype=bool).tolist(),
            none,
            none,
            none,
            none,
        ]
    scored = np.ones(n, dtype=bool) if out.scored is None else np.asarray(out.scored, dtype=bool)
    verdicts: list[bool | None] = np.asarray(out.is_anomaly, dtype=bool).tolist()
    threshold = float(out.threshold) if math.isfinite(out.threshold) else None
    scored_list = scored.tolist()
    seen = none
    if out.calibration_seen is not None:
        counts = np.asarray(out.calibration_seen).tolist()
        seen = [c if not s else None for c, s in zip(counts, scored_list, strict=True)]
    return [
        none,
        none,
        _finite_or_none(out.confidence),
        none,
        none,
        _finite_or_none(out.scores),
        [v if s else None for v, s in zip(verdicts, scored_list, strict=True)],
        [threshold if s else None for s in scored_list],
        seen,
    ]
