"""Routes in the shapes existing clients already send (the RL-IDS and IoT seed clients).

- RL-IDS client: ``GET /health``, ``GET /model/info``, ``POST /predict`` with
  ``{"features": [...]}``, ``POST /predict/batch`` with a JSON list of such objects.
- IoT client: ``POST /predict`` with ``sensor_data`` and ``model_name``,
  ``POST /predict/batch`` with ``readings``, ``GET /models``, ``GET /info``.

Both share ``/predict`` and ``/predict/batch``; the body's shape says which client it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

import mlgate
from mlgate.api.body import read_json
from mlgate.api.deps import DataPlaneDep, InferencePredict, RequireModelsRead, StateDep
from mlgate.api.inference import charging, encoded_response, http_context
from mlgate.api.presenters import model_view
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import (
    ERROR_RESPONSES,
    INFERENCE_ERROR_RESPONSES,
    SeedFlow,
    SeedReading,
    SeedReadings,
    request_body,
)
from mlgate.api.security import AUTH_ERROR_RESPONSES, authenticate, authorize
from mlgate.auth.scopes import PREDICT
from mlgate.dataplane import Codec
from mlgate.errors import ValidationFailed
from mlgate.protocols import seed_iot, seed_rlids
from mlgate.settings import ModelSettings

router = APIRouter(tags=["seed-compatible"], responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES})

RLIDS = seed_rlids.RlidsCodec()
IOT = seed_iot.IotCodec()

_SHAPE_HINT = (
    "send {'features': [...]} for intrusion detection or "
    "{'sensor_data': {...}, 'model_name': ...} for IoT sensors"
)


def _iot_payload(settings: ModelSettings, body: dict[str, Any], *, batch: bool) -> Any:
    return seed_iot.parse(
        body, batch=batch, detectors=settings.iot_detectors, default=settings.iot_default_model
    )


@router.post(
    "/predict",
    summary="Score one flow (`features`) or one sensor reading (`sensor_data`)",
    dependencies=[InferencePredict],
    responses=INFERENCE_ERROR_RESPONSES,
    openapi_extra=request_body(SeedFlow | SeedReading),
)
async def predict(request: Request, state: StateDep, dataplane: DataPlaneDep) -> Response:
    async with charging(request):
        return await _predict(request, state, dataplane)


async def _predict(request: Request, state: StateDep, dataplane: DataPlaneDep) -> Response:
    body = await read_json(request)
    models = state.settings.models
    if isinstance(body, dict) and "features" in body:
        payload: Any = seed_rlids.parse_single(body)
        codec: Codec = RLIDS
        model = models.default_model
    elif isinstance(body, dict) and "sensor_data" in body:
        payload = _iot_payload(models, body, batch=False)
        model, codec = payload.model, IOT
    else:
        raise ValidationFailed(
            f"unrecognised request body: {_SHAPE_HINT}",
            details=[{"field": "body", "message": "expected features or sensor_data"}],
        )
    encoded = await dataplane.infer(
        model, None, payload, codec, http_context(request, codec.protocol)
    )
    return encoded_response(encoded)


@router.post(
    "/predict/batch",
    summary="Score a list of flows or a set of sensor readings",
    dependencies=[InferencePredict],
    responses=INFERENCE_ERROR_RESPONSES,
    openapi_extra=request_body(list[SeedFlow] | SeedReadings),
)
async def predict_batch(request: Request, state: StateDep, dataplane: DataPlaneDep) -> Response:
    async with charging(request):
        return await _predict_batch(request, state, dataplane)


async def _predict_batch(request: Request, state: StateDep, dataplane: DataPlaneDep) -> Response:
    body = await read_json(request)
    models = state.settings.models
    if isinstance(body, list):
        payload: Any = seed_rlids.parse_batch(body)
        codec: Codec = RLIDS
        model = models.default_model
    elif isinstance(body, dict) and "readings" in body:
        payload = _iot_payload(models, body, batch=True)
        model, codec = payload.model, IOT
    else:
        raise ValidationFailed(
            "unrecognised batch body: send a JSON list of {'features': [...]} objects "
            "or {'readings': [...], 'model_name': ...}",
            details=[{"field": "body", "message": "expected a list or an object with readings"}],
        )
    encoded = await dataplane.infer(
        model, None, payload, codec, http_context(request, codec.protocol)
    )
    return encoded_response(encoded)


@router.get(
    "/model/info",
    summary="The default model (RL-IDS client)",
    dependencies=[RequireModelsRead],
)
async def model_info(state: StateDep, dataplane: DataPlaneDep) -> Response:
    mv = dataplane.resolve(state.settings.models.default_model)
    m = mv.manifest
    return ORJSONResponse(
        {
            "model_name": mv.name,
            "model_version": mv.version,
            "model_type": m.runtime,
            "task": m.task,
            "description": m.description,
            "input_features": mv.n_features,
            "feature_names": m.feature_names,
            "n_classes": len(m.classes),
            "class_names": m.classes,
            "attack_classes": m.attack_classes,
            "metrics": m.metrics,
            "loaded_at": mv.loaded_at.isoformat(),
        }
    )


@router.get(
    "/models",
    summary="Served models and the IoT detector names (IoT client)",
    dependencies=[RequireModelsRead],
)
async def models(state: StateDep) -> Response:
    registry = state.registry
    served = {e.name for e in registry.models() if e.versions}
    detectors = state.settings.models.iot_detectors
    return ORJSONResponse(
        {
            "models": [model_view(e) for e in registry.models()],
            "available_models": sorted(k for k, v in detectors.items() if v in served),
            "default_model": state.settings.models.iot_default_model,
        }
    )


@router.get("/info", summary="Service information (IoT client)", dependencies=[RequireModelsRead])
async def info(state: StateDep) -> Response:
    registry = state.registry
    return ORJSONResponse(
        {
            "name": "mlgate",
            "version": mlgate.__version__,
            "uptime_seconds": round(state.uptime_seconds, 3),
            "default_model": state.settings.models.default_model,
            "models": [e.name for e in registry.models() if e.versions],
            "iot_detectors": state.settings.models.iot_detectors,
            "max_batch_rows": state.settings.models.max_batch_rows,
        }
    )


async def hot_predict(request: Request) -> Response:
    """``POST /predict`` as :mod:`mlgate.api.hot` serves it."""
    authorize(await authenticate(request), PREDICT)
    state = request.app.state.mlgate
    async with charging(request):
        return await _predict(request, state, state.dataplane)


async def hot_predict_batch(request: Request) -> Response:
    """``POST /predict/batch`` as :mod:`mlgate.api.hot` serves it."""
    authorize(await authenticate(request), PREDICT)
    state = request.app.state.mlgate
    async with charging(request):
        return await _predict_batch(request, state, state.dataplane)
