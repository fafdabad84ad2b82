"""Per-device baselines of anomaly models: read, upload, reset.

Reading a baseline needs ``predict`` (the scope of the clients that stream a device's
readings and want to see its calibration); uploading and resetting need ``admin``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate.api.body import read_json, require_object
from mlgate.api.deps import DataPlaneDep, DevicesDep, RequireAdmin, RequirePredict
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.devices.store import check_device_id
from mlgate.devices.upload import check_anomaly_model, parse_upload
from mlgate.errors import NotFound

router = APIRouter(
    prefix="/v1/models/{model}/devices/{device_id}",
    tags=["devices"],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


def _not_found(model: str, device_id: str) -> NotFound:
    return NotFound(
        f"device {device_id!r} has no baseline for model {model!r}: it gets one from its "
        "first readings, or upload one with PUT",
        details={"model": model, "device_id": device_id},
    )


@router.get(
    "/baseline",
    summary="A device's baseline or calibration progress",
    dependencies=[RequirePredict],
)
async def get_baseline(
    model: str, device_id: str, dataplane: DataPlaneDep, devices: DevicesDep
) -> Response:
    check_device_id(device_id)
    mv = dataplane.resolve(model)
    baseline = await devices.store.get(mv.name, device_id)
    if baseline is None:
        raise _not_found(mv.name, device_id)
    return ORJSONResponse(baseline.view())


@router.put("/baseline", summary="Upload a device's baseline", dependencies=[RequireAdmin])
async def put_baseline(
    model: str, device_id: str, request: Request, dataplane: DataPlaneDep, devices: DevicesDep
) -> Response:
    check_device_id(device_id)
    mv = dataplane.resolve(model)
    body = require_object(await read_json(request))
    mean, std, seen = parse_upload(body, mv)
    baseline = await devices.store.put(
        mv.name, device_id, mv.manifest.feature_names, mean, std, seen=seen
    )
    return ORJSONResponse(baseline.view())


@router.delete(
    "/baseline",
    summary="Reset a device's baseline (it calibrates again)",
    status_code=204,
    dependencies=[RequireAdmin],
)
async def delete_baseline(
    model: str, device_id: str, dataplane: DataPlaneDep, devices: DevicesDep
) -> Response:
    check_device_id(device_id)
    mv = dataplane.resolve(model)
    check_anomaly_model(mv)
    devices.windows.forget((mv.name, device_id))
    if not await devices.store.delete(mv.name, device_id):
        raise _not_found(mv.name, device_id)
    return Response(status_code=204)
