"""The Open Inference Protocol (KServe v2 REST) codec, JSON tensors.

Request inputs take one of two forms:

- one ``[N, n_features]`` tensor (any name, any numeric datatype), the features in the
  model's order;
- one tensor per feature, named by the feature's name or an alias, each ``[N]`` or
  ``[N, 1]``, the way Triton users send tabular data (unknown names are ignored and
  reported in the response's ``ignored_inputs`` parameter).

Outputs: classification ``probabilities`` [N, C], ``predicted_class`` [N],
``predicted_class_name`` (BYTES) [N], ``confidence`` [N], ``is_attack`` (BOOL) [N];
anomaly ``anomaly_score``, ``is_anomaly``, ``confidence`` and, when asked for,
``explanation`` (BYTES); on the per-device path also ``calibrating`` (BOOL) and
``calibration_seen``. ``outputs`` in the request selects; per-output ``binary_data``
and the request's ``binary_data_output`` parameter choose binary data (then the
response uses the binary tensor extension, framed by :mod:`.oip_binary`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from mlgate.dataplane.types import (
    AnomalyOutput,
    Encoded,
    InferenceInput,
    InferenceResult,
)
from mlgate.dataplane.validation import check_row_count, fail, finalize, json_type, quote
from mlgate.devices.store import check_device_id
from mlgate.protocols.common import explain_option
from mlgate.protocols.oip_binary import frame
from mlgate.protocols.oip_tensors import (
    check_shape,
    datatype_of,
    from_bytes,
    from_json_data,
    input_dtype,
    to_bytes,
    to_json_data,
)
from mlgate.protocols.results import anomaly_rows
from mlgate.registry.registry import ModelVersion

MAX_INPUTS = 1024


@dataclass(frozen=True, slots=True)
class InputTensor:
    """One request input: its declared name, shape and datatype, and its data (JSON
    ``data``, or where its bytes lie in the binary part of the body)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    field: str
    data: Any = None
    binary: tuple[memoryview, int, int] | None = None
    """(buffer, offset, size) for binary data."""

    def array(self) -> np.ndarray:
        """The tensor as float64 values of its shape."""
        if self.binary is not None:
            buffer, offset, size = self.binary
            raw = from_bytes(buffer, offset, size, self.shape, self.dtype, self.field)
            return raw.astype(np.float64, copy=False)
        return from_json_data(self.data, self.shape, self.dtype, f"{self.field}.data")


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None


@dataclass(frozen=True, slots=True)
class OipPayload:
    """A parsed inference request."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool
    device_id: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    explain: int | None = None


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(where, f"expected an object, got {json_type(value)}")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise fail(f"{where}.{key}", f"expected true or false, got {json_type(value)}")


def parse_request(document: Any, binary: memoryview | None = None) -> OipPayload:
    """An inference request from its JSON (and the binary part of the body, if any)."""
    if not isinstance(document, dict):
        raise fail("body", f"expected an inference request object, got {json_type(document)}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise fail("id", f"expected a string, got {json_type(request_id)}")
    parameters = _parameters(document.get("parameters"), "parameters")
    device_id = parameters.get("device_id")
    if device_id is not None:
        device_id = check_device_id(device_id, "parameters.device_id")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise fail("inputs", "expected a non-empty array of input tensors")
    if len(raw_inputs) > MAX_INPUTS:
        raise fail("inputs", f"at most {MAX_INPUTS} input tensors")
    inputs = []
    offset = 0
    for k, raw in enumerate(raw_inputs):
        tensor, offset = _input(raw, f"inputs[{k}]", binary, offset)
        inputs.append(tensor)
    if binary is not None and offset != len(binary):
        raise fail(
            "inputs",
            f"the binary part of the body has {len(binary)} bytes, the inputs' "
            f"binary_data_size add up to {offset}",
        )
    outputs = _outputs(document.get("outputs"))
    binary_output = bool(_flag(parameters, "binary_data_output", "parameters"))
    explain = explain_option(parameters.get("explain"), "parameters.explain")
    return OipPayload(
        request_id, tuple(inputs), outputs, binary_output, device_id, parameters, explain
    )


def _input(raw: Any, where: str, binary: memoryview | None, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise fail(where, f"expected an input tensor object, got {json_type(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise fail(f"{where}.name", "expected a non-empty string")
    shape = check_shape(raw.get("shape"), f"{where}.shape")
    dtype = input_dtype(raw.get("datatype"), f"{where}.datatype")
    parameters = _parameters(raw.get("parameters"), f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise fail(where, "has neither data nor parameters.binary_data_size")
        return InputTensor(name, shape, dtype, where, data=raw["data"]), offset
    if type(size) is not int or size < 0:
        raise fail(f"{where}.parameters.binary_data_size", "expected a non-negative integer")
    if binary is None or offset + size > len(binary):
        raise fail(
            f"{where}.parameters.binary_data_size",
            f"{size} bytes from offset {offset} go beyond the binary part of the body "
            f"({0 if binary is None else len(binary)} bytes)",
        )
    return InputTensor(name, shape, dtype, where, binary=(binary, offset, size)), offset + size


def _outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise fail("outputs", f"expected an array, got {json_type(raw)}")
    requested = []
    for k, item in enumerate(raw):
        where = f"outputs[{k}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise fail(where, "expected an object with a name")
        parameters = _parameters(item.get("parameters"), f"{where}.parameters")
        requested.append(
            RequestedOutput(item["name"], _flag(parameters, "binary_data", f"{where}.parameters"))
        )
    return tuple(requested)


# -- decoding --------------------------------------------------------------------------


def _matrix_input(payload: OipPayload, mv: ModelVersion) -> InputTensor | None:
    """The one ``[N, n_features]`` tensor, when the request uses that form."""
    if len(payload.inputs) != 1:
        return None
    tensor = payload.inputs[0]
    if len(tensor.shape) == 2 and tensor.name not in mv.feature_index:
        return tensor
    return None


def _decode_matrix(tensor: InputTensor, mv: ModelVersion, max_rows: int) -> InferenceInput:
    rows, width = tensor.shape
    if width != mv.n_features:
        raise fail(
            f"{tensor.field}.shape",
            f"expected [N, {mv.n_features}] ({mv.n_features} features), got {list(tensor.shape)}",
        )
    check_row_count(rows, f"{tensor.field}.shape[0]", max_rows)
    matrix = tensor.array()
    done = finalize(matrix, mv, lambda i, j: f"{tensor.field}[{i}][{j}]")
    return InferenceInput(done.matrix, (), done.substituted, done.substituted_total)


def _decode_features(payload: OipPayload, mv: ModelVersion, max_rows: int) -> InferenceInput:
    columns: dict[int, InputTensor] = {}
    ignored = []
    rows: int | None = None
    for tensor in payload.inputs:
        j = mv.feature_index.get(tensor.name)
        if j is None:
            ignored.append(tensor.name)
            continue
        if j in columns:
            feature = mv.manifest.features[j].name
            raise fail(tensor.field, f"feature {feature!r} given twice")
        if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
            raise fail(
                f"{tensor.field}.shape",
                f"a per-feature tensor is [N] or [N, 1], got {list(tensor.shape)}",
            )
        if rows is not None and tensor.shape[0] != rows:
            raise fail(
                f"{tensor.field}.shape",
                f"has {tensor.shape[0]} rows, the tensors before it have {rows}",
            )
        rows = tensor.shape[0]
        columns[j] = tensor
    missing = [f.name for j, f in enumerate(mv.manifest.features) if j not in columns]
    if missing:
        hint = (
            f"send one [N, {mv.n_features}] tensor, or one tensor per feature"
            if not columns
            else "send one tensor per feature"
        )
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        raise fail("inputs", f"missing features: {shown} ({hint})", missing=missing)
    assert rows is not None
    check_row_count(rows, "inputs[0].shape[0]", max_rows)
    matrix = np.empty((rows, mv.n_features), dtype=np.float64)
    for j, tensor in columns.items():
        matrix[:, j] = tensor.array().reshape(rows)

    def name_cell(i: int, j: int) -> str:
        return f"{columns[j].field}[{i}]"

    done = finalize(matrix, mv, name_cell)
    return InferenceInput(
        done.matrix, tuple(sorted(ignored)), done.substituted, done.substituted_total
    )


# -- encoding --------------------------------------------------------------------------

OutputBuilder = Callable[[ModelVersion, Any], np.ndarray]


def _classification_outputs() -> dict[str, OutputBuilder]:
    return {
        "probabilities": lambda mv, out: out.probabilities,
        "predicted_class": lambda mv, out: out.predicted.astype(np.int64),
        "predicted_class_name": lambda mv, out: np.asarray(mv.manifest.classes, dtype=object)[
            out.predicted
        ],
        "confidence": lambda mv, out: out.confidence,
        "is_attack": lambda mv, out: out.is_attack.astype(bool),
    }


def _anomaly_outputs() -> dict[str, OutputBuilder]:
    return {
        "anomaly_score": lambda mv, out: out.scores,
        "is_anomaly": lambda mv, out: out.is_anomaly.astype(bool),
        "confidence": lambda mv, out: out.confidence,
    }


_EXTRA_ANOMALY: dict[str, OutputBuilder] = {
    "explanation": lambda mv, out: np.asarray(
        [r["explanation"] for r in anomaly_rows(mv, out)], dtype=object
    ),
}
_DEVICE: dict[str, OutputBuilder] = {
    "calibrating": lambda mv, out: ~out.scored,
    "calibration_seen": lambda mv, out: out.calibration_seen.astype(np.int64),
}


def output_specs(mv: ModelVersion, device: bool = False) -> dict[str, OutputBuilder]:
    """Every output a model version can return, by name (defaults first)."""
    if mv.manifest.task == "classification":
        return _classification_outputs()
    specs = {**_anomaly_outputs(), **_EXTRA_ANOMALY}
    if device:
        specs.update(_DEVICE)
    return specs


def default_outputs(mv: ModelVersion, device: bool) -> list[str]:
    """Outputs returned when the request names none (explanations only on request)."""
    names = [n for n in output_specs(mv, device) if n != "explanation"]
    return names


def output_metadata(mv: ModelVersion) -> list[dict[str, Any]]:
    """``outputs`` of the model metadata."""
    n_classes = len(mv.manifest.classes)
    shapes: dict[str, tuple[str, list[int]]] = {
        "probabilities": ("FP64", [-1, n_classes]),
        "predicted_class": ("INT64", [-1]),
        "predicted_class_name": ("BYTES", [-1]),
        "confidence": ("FP64", [-1]),
        "is_attack": ("BOOL", [-1]),
        "anomaly_score": ("FP64", [-1]),
        "is_anomaly": ("BOOL", [-1]),
        "explanation": ("BYTES", [-1]),
        "calibrating": ("BOOL", [-1]),
        "calibration_seen": ("INT64", [-1]),
    }
    device = mv.manifest.device_baseline is not None
    return [
        {"name": name, "datatype": shapes[name][0], "shape": shapes[name][1]}
        for name in output_specs(mv, device)
    ]


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    array: np.ndarray
    binary: bool


def build_outputs(result: InferenceResult, payload: OipPayload) -> list[OutputTensor]:
    """The response's output tensors, as the request asked for them."""
    mv, out = result.model, result.output
    device = isinstance(out, AnomalyOutput) and out.scored is not None
    specs = output_specs(mv, device)
    defaults = default_outputs(mv, device)
    if result.explanations is not None:
        # Asked for with parameters.explain: one JSON document per row.
        explained = np.asarray(
            [orjson.dumps(e).decode() for e in result.explanations], dtype=object
        )
        specs = {**specs, "explanation": lambda mv, out: explained}
        defaults = [*defaults, "explanation"]
    wanted: list[tuple[str, bool | None]]
    if payload.outputs is None:
        wanted = [(name, None) for name in defaults]
    else:
        wanted = [(o.name, o.binary) for o in payload.outputs]
    tensors = []
    for name, binary in wanted:
        builder = specs.get(name)
        if builder is None:
            raise fail(
                "outputs",
                f"model {mv.name!r} has no output {quote(name)}; it has {', '.join(specs)}",
            )
        array = builder(mv, out)
        tensors.append(
            OutputTensor(name, array, payload.binary_output if binary is None else binary)
        )
    return tensors


def response_header(
    result: InferenceResult, payload: OipPayload, tensors: list[OutputTensor]
) -> tuple[dict[str, Any], list[bytes]]:
    """The response's JSON part and the binary chunks that follow it, in order."""
    mv = result.model
    parameters: dict[str, Any] = {}
    if result.request_id:
        parameters["request_id"] = result.request_id
    # OIP parameters are scalars: the ids of the rows, in order, comma-separated.
    parameters["prediction_ids"] = ",".join(result.prediction_ids())
    inputs = result.inputs
    if inputs.ignored:
        parameters["ignored_inputs"] = ",".join(inputs.ignored)
    if inputs.substituted_total:
        parameters["substituted_cells"] = inputs.substituted_total
    if isinstance(result.output, AnomalyOutput):
        parameters["threshold"] = result.output.threshold
    if payload.device_id is not None:
        parameters["device_id"] = payload.device_id
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": datatype_of(tensor.array.dtype),
            "shape": list(tensor.array.shape),
        }
        if tensor.binary:
            raw = to_bytes(tensor.array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(tensor.array)
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": mv.name, "model_version": mv.version}
    if payload.id is not None:
        header["id"] = payload.id
    header["parameters"] = parameters
    header["outputs"] = outputs
    return header, chunks


def encode_response(result: InferenceResult, payload: OipPayload) -> Encoded:
    """JSON, or the binary tensor extension's framing when any output is binary."""
    tensors = build_outputs(result, payload)
    header, chunks = response_header(result, payload, tensors)
    return frame(header, chunks)


class OipCodec:
    """``POST /v2/models/{model}[/versions/{version}]/infer``, JSON or binary tensors."""

    protocol = "oip"

    def decode(self, payload: OipPayload, mv: ModelVersion, max_rows: int) -> InferenceInput:
        tensor = _matrix_input(payload, mv)
        if tensor is not None:
            decoded = _decode_matrix(tensor, mv, max_rows)
        else:
            decoded = _decode_features(payload, mv, max_rows)
        if payload.device_id is None and payload.explain is None:
            return decoded
        return replace(decoded, device_id=payload.device_id, explain=payload.explain)

    def encode(self, result: InferenceResult, payload: OipPayload) -> Encoded:
        return encode_response(result, payload)
