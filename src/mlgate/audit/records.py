"""Inference events as audit rows: the per-row work, done by the flusher, never by
``observe()``.

One event (one request) becomes one row per scored input row, in the column order of
:data:`COLUMNS`. Arrays are turned into Python values a column at a time (``tolist``),
not cell by cell.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

import numpy as np
import orjson

from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput, InferenceEvent

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


def event_rows(
    event: InferenceEvent, classes: tuple[str, ...] | None, *, raw_inputs: bool
) -> list[Row]:
    """The audit rows of one answered request (``classes``: the version's class names,
    None when unknown)."""
    n = event.rows
    if n == 0:
        return []
    principal = event.principal
    head = (
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
    hashes = input_hashes(event.inputs.matrix)
    inputs: list[str | None] = [None] * n
    if raw_inputs:
        inputs = list(_json_rows(event.inputs.matrix))
    outputs = _output_columns(event, classes)
    key = event.prediction_key
    return [
        (key, i, *head, hashes[i], *out, inputs[i])
        for i, out in enumerate(zip(*outputs, strict=True))
    ]


def _output_columns(event: InferenceEvent, classes: tuple[str, ...] | None) -> list[list[Any]]:
    """predicted_class .. calibration_seen, one list per column."""
    out = event.output
    n = event.rows
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
    assert isinstance(out, AnomalyOutput)
    scored = np.ones(n, dtype=bool) if out.scored is None else np.asarray(out.scored, dtype=bool)
    verdicts: list[bool | None] = np.asarray(out.is_anomaly, dtype=bool).tolist()
    threshold = float(out.threshold) if math.isfinite(out.threshold) else None
    seen = none if out.calibration_seen is None else np.asarray(out.calibration_seen).tolist()
    scored_list = scored.tolist()
    return [
        none,
        none,
        _finite_or_none(out.confidence),
        none,
        none,
        _finite_or_none(out.scores),
        [v if s else None for v, s in zip(verdicts, scored_list, strict=True)],
        [threshold if s else None for s in scored_list],
        [v if not s else None for v, s in zip(seen, scored_list, strict=True)]
        if out.calibration_seen is not None
        else none,
    ]
