"""Per-device baselines and detectors of anomaly models: read, upload, reset.

Reading a baseline or a detector needs ``predict`` (the scope of the clients that stream
a device's readings and want to see its calibration); uploading, resetting and setting
a detector's alarm quantile and margin need ``admin``. A detector belongs to one model
version (``?version=``, default: the version requests without one get).
A device id names a device of the caller's owner (see :mod:`mlgate.devices.owners`);
``?owner=`` lets an admin work on any owner's devices. Another owner's device is a 404,
exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mlgate.api.body import read_json, require_object
from mlgate.api.deps import DataPlaneDep, DevicesDep, PrincipalDep, RequireAdmin, RequirePredict
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.auth.principal import Principal
from mlgate.auth.scopes import ADMIN
from mlgate.devices.detector_store import Recipe
from mlgate.devices.owners import check_owner, device_owner
from mlgate.devices.store import check_device_id
from mlgate.devices.upload import check_anomaly_model, parse_upload
from mlgate.errors import NotFound
from mlgate.registry.registry import ModelVersion

router = APIRouter(
    prefix="/v1/models/{model}/devices/{device_id}",
    tags=["devices"],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)


OwnerQuery = Query(
    default=None,
    description="Whose device (admins only): `user:<id>`, `tenant:<name>` or `unowned`; "
    "default: the caller's own.",
)


def _not_found(model: str, device_id: str) -> NotFound:
    return NotFound(
        f"device {device_id!r} has no baseline for model {model!r}: it gets one from its "
        "first readings, or upload one with PUT",
        details={"model": model, "device_id": device_id},
    )


def _owner(
    principal: Principal,
    named: str | None,
    model: str,
    device_id: str,
    missing: NotFound | None = None,
) -> str:
    """The owner whose device the request means: the caller's, or (admins) the named one.
    A non-admin naming another owner gets the 404 of a device that does not exist
    (``missing``; default: the baseline's)."""
    own = device_owner(principal)
    if named is None or named == own:
        return own
    if not principal.has(ADMIN):
        raise missing or _not_found(model, device_id)
    return check_owner(named)


@router.get(
    "/baseline",
    summary="A device's baseline or calibration progress",
    dependencies=[RequirePredict],
)
async def get_baseline(
    model: str,
    device_id: str,
    dataplane: DataPlaneDep,
    devices: DevicesDep,
    principal: PrincipalDep,
    owner: str | None = OwnerQuery,
) -> Response:
    check_device_id(device_id)
    mv = dataplane.resolve(model)
    who = _owner(principal, owner, mv.name, device_id)
    baseline = await devices.store.get(mv.name, device_id, owner=who)
    if baseline is None:
        raise _not_found(mv.name, device_id)
    return ORJSONResponse(baseline.view())


@router.put("/baseline", summary="Upload a device's baseline", dependencies=[RequireAdmin])
async def put_baseline(
    model: str,
    device_id: str,
    request: Request,
    dataplane: DataPlaneDep,
    devices: DevicesDep,
    principal: PrincipalDep,
    owner: str | None = OwnerQuery,
) -> Response:
    check_device_id(device_id)
    mv = dataplane.resolve(model)
    who = _owner(principal, owner, mv.name, device_id)
    body = require_object(await read_json(request))
    mean, std, seen = parse_upload(body, mv)
    baseline = await devices.store.put(
        mv.name, device_id, mv.manifest.feature_names, mean, std, seen=seen, owner=who
    )
    return ORJSONResponse(baseline.view())


@router.delete(
    "/baseline",
    summary="Reset a device's baseline (it calibrates again)",
    status_code=204,
    dependencies=[RequireAdmin],
)
async def delete_baseline(
    model: str,
    device_id: str,
    dataplane: DataPlaneDep,
    devices: DevicesDep,
    principal: PrincipalDep,
    owner: str | None = OwnerQuery,
) -> Response:
    check_device_id(device_id)
    mv = dataplane.resolve(model)
    check_anomaly_model(mv)
    who = _owner(principal, owner, mv.name, device_id)
    deleted_from = await devices.store.delete(mv.name, device_id, owner=who)
    if deleted_from is None:
        raise _not_found(mv.name, device_id)
    devices.windows.forget((deleted_from, mv.name, device_id))
    return Response(status_code=204)


VersionQuery = Query(
    default=None,
    description="The model version or alias whose detector (one with `device_detector`); "
    "default: the version requests without one get.",
)


def _no_detector(model: str, version: str, device_id: str) -> NotFound:
    return NotFound(
        f"device {device_id!r} has no detector for model {model!r} version {version!r}: "
        "it gets one from its first readings",
        details={"model": model, "version": version, "device_id": device_id},
    )


class DetectorTarget(NamedTuple):
    """The device detector a request means: the version, its recipe, the owner."""

    mv: ModelVersion
    recipe: Recipe
    owner: str
    device_id: str

    def missing(self) -> NotFound:
        return _no_detector(self.mv.name, self.mv.version, self.device_id)


async def detector_target(
    model: str,
    device_id: str,
    dataplane: DataPlaneDep,
    devices: DevicesDep,
    principal: PrincipalDep,
    owner: str | None = OwnerQuery,
    version: str | None = VersionQuery,
) -> DetectorTarget:
    """Checks the device id, resolves the version (a 422 without ``device_detector``)
    and whose device it is (another owner's is the 404 of a missing detector)."""
    check_device_id(device_id)
    mv = dataplane.resolve(model, version)
    recipe = devices.recipe(mv)
    who = _owner(principal, owner, mv.name, device_id, _no_detector(mv.name, mv.version, device_id))
    return DetectorTarget(mv, recipe, who, device_id)


TargetDep = Annotated[DetectorTarget, Depends(detector_target)]


@router.get(
    "/detector",
    summary="A device's own detector and stream, or its calibration progress",
    dependencies=[RequirePredict],
)
async def get_detector(target: TargetDep, devices: DevicesDep) -> Response:
    mv = target.mv
    detector = await devices.detectors.get(
        mv.name, mv.version, target.device_id, owner=target.owner
    )
    if detector is None:
        raise target.missing()
    return ORJSONResponse(detector.view())


@router.delete(
    "/detector",
    summary="Reset a device's detector (it calibrates again)",
    status_code=204,
    dependencies=[RequireAdmin],
)
async def delete_detector(target: TargetDep, devices: DevicesDep) -> Response:
    mv = target.mv
    if not await devices.detectors.delete(
        mv.name, mv.version, target.device_id, owner=target.owner
    ):
        raise target.missing()
    return Response(status_code=204)


class AlarmSettings(BaseModel):
    """A device's own alarm settings: threshold = ``quantile`` of its detector's
    cross-fitted calibration scores x ``margin``."""

    model_config = ConfigDict(extra="forbid")

    quantile: float = Field(ge=0.5, le=1.0, examples=[0.995])
    """Of the calibration scores (1.0: their maximum). On normal operation like the
    calibration window, about ``1 - quantile`` of the readings exceed it before the
    margin, smoothing and debouncing."""
    margin: float = Field(gt=0, le=100, examples=[1.25])
    """Multiplies the quantile: above 1 fewer false alarms, below 1 fewer missed ones."""


@router.put(
    "/detector/alarm",
    summary="Set a device's own alarm quantile and margin",
    dependencies=[RequireAdmin],
)
async def put_detector_alarm(
    body: AlarmSettings, target: TargetDep, devices: DevicesDep
) -> Response:
    """A fitted detector takes its threshold again from its calibration scores at once
    (no recalibration; the stream goes on); a device still calibrating, or that has sent
    nothing yet, is fitted with these settings. A reset (DELETE) forgets them."""
    mv = target.mv
    detector = await devices.detectors.set_alarm(
        mv.name,
        mv.version,
        target.device_id,
        target.recipe,
        quantile=body.quantile,
        margin=body.margin,
        owner=target.owner,
    )
    return ORJSONResponse(detector.view())
