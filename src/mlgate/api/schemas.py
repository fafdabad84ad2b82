"""Request and response shapes, for the OpenAPI document.

Prediction routes parse their bodies by hand (see :mod:`mlgate.protocols`)
rather than through these models: a 1,000-row batch must not become 1,000 pydantic
objects. The models here describe the contract for /docs and for clients.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

Instance = list[float] | dict[str, float]


class PredictRequest(BaseModel):
    features: Instance = Field(
        description="One instance: numbers in the model's feature order, or an object "
        "of feature names (or aliases) to numbers. Unused names are ignored and reported."
    )
    version: str | None = Field(
        default=None, description="Version or alias (`latest`, `stable`); default: stable."
    )
    device_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="Anomaly models with per-device baselines: the device the reading comes "
        "from. Its first readings calibrate its baseline (the response says so); later ones "
        "are scored against it.",
    )


class BatchPredictRequest(BaseModel):
    instances: list[Instance] = Field(min_length=1, description="Instances to score.")
    version: str | None = None
    device_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="One device's consecutive readings, in order (see PredictRequest).",
    )


class ClassificationResult(BaseModel):
    predicted_class: int
    predicted_class_name: str
    confidence: float
    probabilities: dict[str, float]
    is_attack: bool


class Deviation(BaseModel):
    feature: str
    value: float
    expected: float
    z_score: float


class AnomalyResult(BaseModel):
    is_anomaly: bool
    anomaly_score: float
    threshold: float
    confidence: float
    explanation: str
    deviations: list[Deviation]


class PredictResponse(BaseModel):
    model: str
    model_version: str
    request_id: str
    timestamp: str
    processing_time_ms: float
    ignored_features: list[str]
    # Plus the fields of ClassificationResult or AnomalyResult, at top level.
    predicted_class: int | None = None
    predicted_class_name: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    is_attack: bool | None = None
    is_anomaly: bool | None = None
    anomaly_score: float | None = None
    explanation: str | None = None


class BatchPredictResponse(BaseModel):
    model: str
    model_version: str
    request_id: str
    timestamp: str
    processing_time_ms: float
    ignored_features: list[str]
    predictions: list[ClassificationResult | AnomalyResult]
    summary: dict[str, Any]


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class SeedFlow(BaseModel):
    """The RL-IDS client's flow: ``POST /predict`` with the default model."""

    features: Instance


class SeedReading(BaseModel):
    """The IoT client's reading: ``POST /predict`` with an anomaly detector."""

    sensor_data: dict[str, float]
    model_name: str | None = Field(default=None, description="Detector; default: the default one.")
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")


class SeedReadings(BaseModel):
    """The IoT client's batch: ``POST /predict/batch``."""

    readings: list[dict[str, float]] = Field(min_length=1)
    model_name: str | None = None
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")


class OipTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="BOOL, UINT8 ... INT64, FP16, FP32, FP64 or BYTES")
    data: list[Any] | None = Field(
        default=None, description="Row-major values, flat or nested; absent with binary data"
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size` when the tensor's data follow the header"
    )


class OipRequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class OipInferRequest(BaseModel):
    """An Open Inference Protocol inference request (JSON, or the JSON header of binary
    tensors)."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="`device_id`, `binary_data_output`, ..."
    )
    inputs: list[OipTensor] = Field(
        min_length=1, description="One tensor of all features, or one per feature name"
    )
    outputs: list[OipRequestedOutput] | None = None


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition (an
    OpenAPI document resolves such references from its own root)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, definitions) for v in schema]
    return schema


def json_schema(shape: Any) -> dict[str, Any]:
    """A model's (or a union's) JSON schema, self-contained."""
    schema = TypeAdapter(shape).json_schema()
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    return inlined


def request_body(shape: Any, *, binary: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON body that the route reads itself
    (``binary``: it also takes ``application/octet-stream``, described so)."""
    content: dict[str, Any] = {"application/json": {"schema": json_schema(shape)}}
    if binary is not None:
        content["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary", "description": binary}
        }
    return {"requestBody": {"required": True, "content": content}}


#: ``Retry-After`` (seconds), as 429 and most 503 answers carry it.
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def error_responses(
    statuses: dict[int, str], model: type[BaseModel] = ErrorEnvelope
) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a route or router: each status with its body and description
    (and ``Retry-After`` on 429 and 503)."""
    return {
        status: {
            "model": model,
            "description": description,
            **({"headers": RETRY_AFTER} if status in (429, 503) else {}),
        }
        for status, description in statuses.items()
    }


_INPUT_ERRORS = {
    400: "Malformed JSON",
    404: "Unknown model or version",
    409: "Conflicts with what is stored (an existing name, a revoked key, a device's "
    "baseline or detector made for another recipe)",
    413: "Body too large",
    415: "Not JSON",
    422: "Invalid input (the field is named in details)",
    503: "Models still loading, the server overloaded or the database unreachable",
}
#: What a route that reads input or stored state may answer besides its success.
ERROR_RESPONSES = error_responses(_INPUT_ERRORS)
#: ... and a prediction, which may also run out of time.
INFERENCE_ERROR_RESPONSES = error_responses(
    {**_INPUT_ERRORS, 504: "The model did not answer within the prediction timeout"}
)


class OipError(BaseModel):
    """The Open Inference Protocol's error body: ``{"error": "message"}``."""

    error: str


#: Errors of the /v2 routes, in the protocol's shape.
OIP_ERROR_RESPONSES = error_responses(
    {
        400: "Malformed request (JSON, tensor header or binary data)",
        404: "Unknown model or version",
        409: "Conflicts with a device's stored baseline or detector",
        413: "Body too large",
        415: "Unsupported content type or encoding",
        422: "Invalid tensors (the message names the input)",
        503: "Models still loading, the server overloaded or the database unreachable",
        504: "The model did not answer within the prediction timeout",
    },
    OipError,
)
