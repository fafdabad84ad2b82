"""Administration of device shares (scope `admin`): let one owner use another's device.

A device id names a device of the caller's owner (the user, or the user's tenant; see
:mod:`mlgate.devices.owners`). A share makes ``device_id`` mean, for ``grantee``, the
device of that id that belongs to ``owner``: the grantee reads its baseline and its
per-device detectors, streams readings that calibrate them or are scored by them (one
stream with the owner's), and an admin's reset through the share resets the owner's
device, as the owner does.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mlgate.api.deps import DevicesDep, RequireAdmin
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.devices.owners import OWNER_PATTERN, check_owner
from mlgate.devices.store import check_device_id
from mlgate.errors import NotFound, ValidationFailed

router = APIRouter(
    prefix="/v1/admin/device-shares",
    tags=["admin"],
    dependencies=[RequireAdmin],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)
#: Documents what :func:`check_owner` accepts (which checks it, with its own 422).
_OWNER: dict[str, Any] = {"pattern": OWNER_PATTERN}


class ShareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(json_schema_extra={"pattern": OWNER_PATTERN})
    """Whose device: `user:<id>`, `tenant:<name>` or `unowned`."""


class ShareOut(BaseModel):
    grantee: str
    device_id: str
    owner: str
    created_at: str | None


@router.get("", summary="List device shares", response_model=list[ShareOut])
async def list_shares(
    devices: DevicesDep,
    owner: str | None = Query(
        default=None, description="Only this owner's devices.", json_schema_extra=_OWNER
    ),
    grantee: str | None = Query(
        default=None, description="Only shares with this owner.", json_schema_extra=_OWNER
    ),
    device_id: str | None = Query(default=None),
) -> Response:
    shares = await devices.store.shares(
        owner=None if owner is None else check_owner(owner),
        grantee=None if grantee is None else check_owner(grantee, "grantee"),
        device_id=None if device_id is None else check_device_id(device_id),
    )
    return ORJSONResponse([share.view() for share in shares])


@router.put(
    "/{grantee}/{device_id}",
    summary="Let an owner use another owner's device",
    response_model=ShareOut,
)
async def share_device(
    grantee: Annotated[str, Path(json_schema_extra=_OWNER)],
    device_id: str,
    body: ShareBody,
    devices: DevicesDep,
) -> Response:
    """Replaces an earlier share of that id with the grantee; reaches every worker within
    `MLGATE_DEVICES__CACHE_TTL_S`. 409 when it would chain shares."""
    check_owner(grantee, "grantee")
    check_device_id(device_id)
    owner = check_owner(body.owner)
    if owner == grantee:
        raise ValidationFailed(
            "an owner's devices are its own already: share with another owner",
            details=[{"field": "owner", "message": "same as the grantee"}],
        )
    share = await devices.store.share(grantee, device_id, owner)
    return ORJSONResponse(share.view())


@router.delete(
    "/{grantee}/{device_id}", summary="End a device share", status_code=204, response_model=None
)
async def unshare_device(
    grantee: Annotated[str, Path(json_schema_extra=_OWNER)], device_id: str, devices: DevicesDep
) -> Response:
    """The grantee's id names its own device again (404 when there was no share)."""
    check_owner(grantee, "grantee")
    check_device_id(device_id)
    if not await devices.store.unshare(grantee, device_id):
        raise NotFound(
            f"{grantee} has no share of device {device_id!r}",
            details={"grantee": grantee, "device_id": device_id},
        )
    return Response(status_code=204)
