"""v1 prediction routes: single and batch, by model name and optional version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from mlgate.api.body import optional_str, read_json, require_object
from mlgate.api.deps import InferenceDep, RequirePredict
from mlgate.api.limits import charge_rows
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import (
    ERROR_RESPONSES,
    BatchPredictRequest,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
    request_body,
)
from mlgate.api.security import AUTH_ERROR_RESPONSES, owner_of_devices
from mlgate.errors import ValidationFailed
from mlgate.inference.service import Prediction

router = APIRouter(
    prefix="/v1/models",
    tags=["prediction"],
    dependencies=[RequirePredict],
    responses=AUTH_ERROR_RESPONSES,
)

VersionQuery = Query(default=None, description="Version or alias; overrides `version` in the body.")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(prediction: Prediction, request: Request) -> dict[str, Any]:
    """The fields every v1 prediction response carries."""
    return {
        "model": prediction.model.name,
        "model_version": prediction.model.version,
        "request_id": request.state.request_id,
        "timestamp": now_iso(),
        "processing_time_ms": round(prediction.processing_time_ms, 3),
        "ignored_features": prediction.ignored_features,
    }


def _version(body: dict[str, Any], query_version: str | None) -> str | None:
    return query_version or optional_str(body, "version")


@router.post(
    "/{model}/predict",
    summary="Score one instance",
    response_model=None,
    responses={200: {"model": PredictResponse}, **ERROR_RESPONSES},
    openapi_extra=request_body(PredictRequest),
)
async def predict(
    model: str, request: Request, inference: InferenceDep, version: str | None = VersionQuery
) -> Response:
    body = require_object(await read_json(request))
    if "features" not in body:
        raise ValidationFailed(
            "features is required",
            details=[{"field": "features", "message": "field required"}],
        )
    await charge_rows(request, None)
    device_id = body.get("device_id")
    prediction = await inference.predict_one(
        model,
        body["features"],
        _version(body, version),
        device_id=device_id,
        device_owner=owner_of_devices(request, device_id),
    )
    content = envelope(prediction, request)
    if device_id is not None:
        content["device_id"] = device_id
    content.update(prediction.results[0])
    return ORJSONResponse(content)


@router.post(
    "/{model}/predict/batch",
    summary="Score many instances",
    response_model=None,
    responses={200: {"model": BatchPredictResponse}, **ERROR_RESPONSES},
    openapi_extra=request_body(BatchPredictRequest),
)
async def predict_batch(
    model: str, request: Request, inference: InferenceDep, version: str | None = VersionQuery
) -> Response:
    body = require_object(await read_json(request))
    if "instances" not in body:
        raise ValidationFailed(
            "instances is required",
            details=[{"field": "instances", "message": "field required"}],
        )
    await charge_rows(request, body["instances"])
    device_id = body.get("device_id")
    prediction = await inference.predict_many(
        model,
        body["instances"],
        _version(body, version),
        device_id=device_id,
        device_owner=owner_of_devices(request, device_id),
    )
    content = envelope(prediction, request)
    if device_id is not None:
        content["device_id"] = device_id
    content["predictions"] = prediction.results
    content["summary"] = prediction.summary()
    return ORJSONResponse(content)
