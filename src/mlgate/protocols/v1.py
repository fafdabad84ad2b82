"""The v1 JSON codec: ``{"features": ...}`` and ``{"instances": [...]}`` bodies.

Parsing tries a typed decode first (msgspec, in C: positional rows of plain numbers go
straight to a float matrix); anything else - named features, ``NaN`` tokens, numbers
out of range, wrong types - takes the general path, which names the offending field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from mlgate.dataplane.outputs import summarize
from mlgate.dataplane.types import (
    AnomalyOutput,
    ClassificationOutput,
    Encoded,
    InferenceInput,
    InferenceResult,
)
from mlgate.dataplane.validation import check_row_count, finalize
from mlgate.protocols.common import (
    input_notes,
    json_encoded,
    now_iso,
    optional_device_id,
    optional_str,
    require_field,
    require_object,
)
from mlgate.protocols.json_parse import parse_json
from mlgate.protocols.json_rows import decode_instance, decode_instances
from mlgate.protocols.results import anomaly_rows, classification_rows
from mlgate.registry.registry import ModelVersion

Row = list[float] | dict[str, float]


class _Single(msgspec.Struct):
    features: Row
    version: str | None = None
    device_id: str | None = None


class _Batch(msgspec.Struct):
    instances: list[Row]
    version: str | None = None
    device_id: str | None = None


_SINGLE = msgspec.json.Decoder(_Single)
_BATCH = msgspec.json.Decoder(_Batch)


@dataclass(frozen=True, slots=True)
class V1Payload:
    """A parsed v1 body: one instance (``features``) or a batch (``instances``)."""

    data: Any
    version: str | None
    device_id: str | None
    batch: bool
    plain: bool = False
    """Came through the typed decode: rows are lists/objects of plain finite numbers."""


def parse(body: bytes, *, batch: bool) -> V1Payload:
    """Parse a v1 request body (400 malformed JSON, 422 wrong shape)."""
    try:
        if batch:
            fast_batch = _BATCH.decode(body)
            data: Any = fast_batch.instances
            version, device_id = fast_batch.version, fast_batch.device_id
        else:
            fast_single = _SINGLE.decode(body)
            data = fast_single.features
            version, device_id = fast_single.version, fast_single.device_id
    except (msgspec.ValidationError, msgspec.DecodeError):
        return from_document(parse_json(body), batch=batch)
    if device_id is not None:
        device_id = optional_device_id({"device_id": device_id})
    return V1Payload(data, version, device_id, batch, plain=True)


def from_document(document: Any, *, batch: bool) -> V1Payload:
    """A v1 payload from an already parsed JSON document."""
    body = require_object(document)
    data = require_field(body, "instances" if batch else "features")
    return V1Payload(data, optional_str(body, "version"), optional_device_id(body), batch)


def _plain_matrix(payload: V1Payload, mv: ModelVersion, max_rows: int) -> np.ndarray | None:
    """The input matrix straight from positional rows of plain numbers, or None when the
    general path must look (named features, wrong widths: it names the problem)."""
    if not payload.plain:
        return None
    data = payload.data
    if payload.batch:
        check_row_count(len(data), "instances", max_rows)
        if not all(type(row) is list for row in data):
            return None
        rows = data
    else:
        if type(data) is not list:
            return None
        rows = [data]
    try:
        matrix = np.array(rows, dtype=np.float64)
    except ValueError:  # rows of different lengths
        return None
    if matrix.ndim != 2 or matrix.shape[1] != mv.n_features:
        return None
    return matrix


class V1Codec:
    """``POST /v1/models/{model}/predict`` and ``.../predict/batch``."""

    protocol = "v1"

    def decode(self, payload: V1Payload, mv: ModelVersion, max_rows: int) -> InferenceInput:
        matrix = _plain_matrix(payload, mv, max_rows)
        if matrix is not None:
            field = "instances" if payload.batch else "features"

            def name_cell(i: int, j: int) -> str:
                return f"{field}[{i}][{j}]" if payload.batch else f"{field}[{j}]"

            done = finalize(matrix, mv, name_cell)
            return InferenceInput(done.matrix, device_id=payload.device_id)
        if payload.batch:
            return decode_instances(
                payload.data, mv, max_rows=max_rows, device_id=payload.device_id
            )
        return decode_instance(payload.data, mv, device_id=payload.device_id)

    def encode(self, result: InferenceResult, payload: V1Payload) -> Encoded:
        mv = result.model
        content: dict[str, Any] = {
            "model": mv.name,
            "model_version": mv.version,
            "request_id": result.request_id,
            "timestamp": now_iso(),
            "processing_time_ms": round(result.processing_time_ms, 3),
            **input_notes(result),
        }
        if payload.device_id is not None:
            content["device_id"] = payload.device_id
        output = result.output
        if isinstance(output, ClassificationOutput):
            rows = classification_rows(mv, output)
        else:
            assert isinstance(output, AnomalyOutput)
            rows = anomaly_rows(mv, output)
        if payload.batch:
            content["predictions"] = rows
            content["summary"] = summarize(mv, output)
        else:
            content.update(rows[0])
        return json_encoded(content)
