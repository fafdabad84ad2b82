"""Request and response shapes, for the OpenAPI document.

Prediction routes parse their bodies by hand (see :mod:`mlgate.protocols`)
rather than through these models: a 1,000-row batch must not become 1,000 pydantic
objects. The models here describe the contract for /docs and for clients.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

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


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route reads itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        400: "Malformed JSON",
        404: "Unknown model or version",
        413: "Body too large",
        415: "Not JSON",
        422: "Invalid input (the field is named in details)",
        503: "Models still loading",
    }.items()
}
