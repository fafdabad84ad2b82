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
from mlgate.api.deps import InferenceDep, RequireModelsRead, RequirePredict, StateDep
from mlgate.api.limits import charge_rows
from mlgate.api.presenters import model_view
from mlgate.api.responses import ORJSONResponse
from mlgate.api.routes.predict import now_iso
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES, owner_of_devices
from mlgate.errors import ModelNotFound, ValidationFailed
from mlgate.inference.features import json_type
from mlgate.inference.service import Prediction
from mlgate.settings import ModelSettings

router = APIRouter(tags=["seed-compatible"], responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES})

_SHAPE_HINT = (
    "send {'features': [...]} for intrusion detection or "
    "{'sensor_data': {...}, 'model_name': ...} for IoT sensors"
)


def _ids_result(prediction: Prediction, result: dict[str, Any], request: Request) -> dict[str, Any]:
    mv = prediction.model
    return {
        "predicted_class": result["predicted_class"],
        "predicted_class_name": result["predicted_class_name"],
        "confidence": result["confidence"],
        "is_attack": result["is_attack"],
        # The RL-IDS client reads a list in class order; the names are alongside.
        "probabilities": list(result["probabilities"].values()),
        "class_names": mv.manifest.classes,
        "processing_time_ms": round(prediction.processing_time_ms, 3),
        "model_name": mv.name,
        "model_version": mv.version,
        "request_id": request.state.request_id,
        "timestamp": now_iso(),
    }


def _device_fields(device_id: str | None, result: dict[str, Any]) -> dict[str, Any]:
    """Fields a device reading adds (nothing without ``device_id``: seed clients see the
    same body as before)."""
    out: dict[str, Any] = {}
    if device_id is not None:
        out["device_id"] = device_id
    if "status" in result:
        out["status"] = result["status"]
        if "calibration" in result:
            out["calibration"] = result["calibration"]
    return out


def _iot_model(settings: ModelSettings, body: dict[str, Any]) -> tuple[str, str]:
    """(registry model, name to echo as model_used) for an IoT request."""
    name = body.get("model_name")
    if name is None:
        return settings.iot_default_model, settings.iot_default_model
    if not isinstance(name, str):
        raise ValidationFailed(
            f"model_name must be a string, got {json_type(name)}",
            details=[{"field": "model_name", "message": "expected string"}],
        )
    if name in settings.iot_detectors:
        return settings.iot_detectors[name], name
    raise ModelNotFound(
        f"unknown model_name {name!r}; use one of {', '.join(sorted(settings.iot_detectors))}",
        details={"field": "model_name", "available": sorted(settings.iot_detectors)},
    )


@router.post(
    "/predict",
    summary="Score one flow (`features`) or one sensor reading (`sensor_data`)",
    dependencies=[RequirePredict],
)
async def predict(request: Request, state: StateDep, inference: InferenceDep) -> Response:
    body = await read_json(request)
    if isinstance(body, dict) and "features" in body:
        await charge_rows(request, None)
        prediction = await inference.predict_one(
            state.settings.models.default_model, body["features"]
        )
        return ORJSONResponse(_ids_result(prediction, prediction.results[0], request))
    if isinstance(body, dict) and "sensor_data" in body:
        model, used = _iot_model(state.settings.models, body)
        await charge_rows(request, None)
        device_id = body.get("device_id")
        prediction = await inference.predict_one(
            model,
            body["sensor_data"],
            field="sensor_data",
            device_id=device_id,
            device_owner=owner_of_devices(request, device_id),
        )
        result = prediction.results[0]
        return ORJSONResponse(
            {
                **_device_fields(device_id, result),
                "is_anomaly": result["is_anomaly"],
                "anomaly_score": result["anomaly_score"],
                "confidence": result["confidence"],
                "model_used": used,
                "model_version": prediction.model.version,
                "timestamp": now_iso(),
                "explanation": result["explanation"],
                "deviations": result["deviations"],
                "ignored_features": prediction.ignored_features,
                "processing_time_ms": round(prediction.processing_time_ms, 3),
                "request_id": request.state.request_id,
            }
        )
    raise ValidationFailed(
        f"unrecognised request body: {_SHAPE_HINT}",
        details=[{"field": "body", "message": "expected features or sensor_data"}],
    )


def _features_of(items: list[Any]) -> list[Any]:
    instances = []
    errors = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and "features" in item:
            instances.append(item["features"])
        else:
            errors.append({"field": f"[{i}]", "message": "expected an object with features"})
            if len(errors) >= 20:
                break
    if errors:
        raise ValidationFailed(
            f"invalid batch: {errors[0]['field']}: {errors[0]['message']}", details=errors
        )
    return instances


@router.post(
    "/predict/batch",
    summary="Score a list of flows or a set of sensor readings",
    dependencies=[RequirePredict],
)
async def predict_batch(request: Request, state: StateDep, inference: InferenceDep) -> Response:
    body = await read_json(request)
    if isinstance(body, list):
        instances = _features_of(body)
        await charge_rows(request, instances)
        prediction = await inference.predict_many(
            state.settings.models.default_model,
            instances,
            field="body",
            paths=[f"[{i}].features" for i in range(len(instances))],
        )
        return ORJSONResponse([_ids_result(prediction, r, request) for r in prediction.results])
    if isinstance(body, dict) and "readings" in body:
        model, used = _iot_model(state.settings.models, body)
        await charge_rows(request, body["readings"])
        device_id = body.get("device_id")
        prediction = await inference.predict_many(
            model,
            body["readings"],
            field="readings",
            device_id=device_id,
            device_owner=owner_of_devices(request, device_id),
        )
        timestamp = now_iso()
        predictions = [
            {
                **_device_fields(None, r),
                "index": i,
                "is_anomaly": r["is_anomaly"],
                "anomaly_score": r["anomaly_score"],
                "confidence": r["confidence"],
                "explanation": r["explanation"],
                "timestamp": timestamp,
            }
            for i, r in enumerate(prediction.results)
        ]
        summary = prediction.summary()
        return ORJSONResponse(
            {
                **_device_fields(device_id, {}),
                "predictions": predictions,
                "total_samples": summary["total"],
                "anomalies_detected": summary["anomalies"],
                "anomaly_rate": summary["anomaly_rate"],
                "model_used": used,
                "model_version": prediction.model.version,
                "ignored_features": prediction.ignored_features,
                "processing_time_ms": round(prediction.processing_time_ms, 3),
                "request_id": request.state.request_id,
            }
        )
    raise ValidationFailed(
        "unrecognised batch body: send a JSON list of {'features': [...]} objects "
        "or {'readings': [...], 'model_name': ...}",
        details=[{"field": "body", "message": "expected a list or an object with readings"}],
    )


@router.get(
    "/model/info",
    summary="The default model (RL-IDS client)",
    dependencies=[RequireModelsRead],
)
async def model_info(state: StateDep, inference: InferenceDep) -> Response:
    mv = inference.resolve(state.settings.models.default_model)
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
