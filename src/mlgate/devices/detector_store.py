"""Per-device detectors in the database: calibration, fit and one stream per device.

For a model version whose manifest declares ``device_detector``, each device gets its own
detector (:mod:`mlgate.devices.detectors`), kept in ``device_detectors``, one row per
(owner, model, version, device id):

1. its first ``calibration_readings`` readings (of the spec's ``features``, in order)
   are appended to the row;
2. the reading that completes them fits the :class:`~mlgate.devices.detectors.DeviceModel`
   (``detectors.fit``), stored as JSON with the stream state right after the window
   (``detectors.initial_state``);
3. every later reading is scored by ``detectors.score``, which carries the stream state
   (smoothing and debouncing history) from one reading to the next.

Every step runs in one transaction that first locks the device's row (as the baselines
do: :func:`~mlgate.devices.store.lock_row`), so several workers feeding the same device
make one stream, in the order they take the lock; nothing is cached in a worker. Owner
scoping and shares are the baselines' (:func:`~mlgate.devices.store.owner_of`).

A device can be given its own alarm ``quantile`` and ``margin`` (:meth:`DetectorStore.
set_alarm`), before or after its detector is fitted: the row's ``params`` keep them under
``device_alarm`` beside the manifest's recipe (which must stay the version's, except
for the two overridden values), a fitted detector takes its threshold again from its
calibration scores, and a device still calibrating is fitted with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mlgate.db.models import DeviceDetectorRow
from mlgate.devices import detectors
from mlgate.devices.store import lock_row, owner_of
from mlgate.errors import Conflict, ValidationFailed
from mlgate.registry.manifest import DeviceDetectorSpec

_KEYS = ("owner", "model", "version", "device_id")
#: The parameters a device may set for itself; the rest is the manifest's recipe.
ALARM_PARAMS = ("quantile", "margin")
#: Where a row's ``params`` keep the device's own alarm settings.
DEVICE_ALARM = "device_alarm"


@dataclass(frozen=True)
class Recipe:
    """What a model version's ``device_detector`` asks for, checked once per version."""

    features: list[str]
    columns: list[int]
    """Indices of ``features`` among the model's features."""
    required: int
    params: detectors.DetectorParams

    @classmethod
    def of(cls, spec: DeviceDetectorSpec, model_features: list[str]) -> Recipe:
        return cls(
            features=list(spec.features),
            columns=[model_features.index(name) for name in spec.features],
            required=spec.calibration_readings,
            params=detectors.DetectorParams.from_dict(dict(spec.params)),
        )


@dataclass(frozen=True)
class DeviceDetector:
    """One device's detector for one model version (``model`` None while calibrating)."""

    owner: str
    model_name: str
    version: str
    device_id: str
    features: list[str]
    params: dict[str, Any]
    required: int
    seen: int
    model: detectors.DeviceModel | None
    scored: int
    alarms: int
    alarm: bool | None
    """The debounced alarm after the last scored reading (None before one)."""
    revision: int
    updated_at: datetime | None

    @property
    def ready(self) -> bool:
        return self.model is not None

    def view(self) -> dict[str, Any]:
        """The JSON shape the API returns."""
        out: dict[str, Any] = {
            "owner": self.owner,
            "model": self.model_name,
            "version": self.version,
            "device_id": self.device_id,
            "status": "ready" if self.ready else "calibrating",
            "calibration": {"seen": self.seen, "required": self.required},
            "features": self.features,
            "params": effective_params(self.params),
            "alarm_settings": "device" if DEVICE_ALARM in self.params else "recipe",
            "revision": self.revision,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
        if self.model is not None:
            out["detector"] = {
                "method": self.model.params.method,
                "threshold": self.model.threshold,
                "calibration_scores": self.model.calibration_scores,
                "center": dict(zip(self.features, self.model.mean.tolist(), strict=True)),
                "spread": dict(zip(self.features, self.model.std.tolist(), strict=True)),
            }
            out["stream"] = {"scored": self.scored, "alarms": self.alarms, "alarm": self.alarm}
        return out


def _from_row(row: DeviceDetectorRow) -> DeviceDetector:
    model = None if row.detector is None else detectors.DeviceModel.from_dict(row.detector)
    alarm = None
    if row.stream is not None and row.scored:
        alarm = bool(row.stream.get("alarm", False))
    return DeviceDetector(
        owner=row.owner,
        model_name=row.model,
        version=row.version,
        device_id=row.device_id,
        features=list(row.features),
        params=dict(row.params),
        required=row.required,
        seen=row.seen,
        model=model,
        scored=row.scored,
        alarms=row.alarms,
        alarm=alarm,
        revision=row.revision,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True)
class DetectorFeed:
    """What one batch of readings did to a device: the calibration progress after each
    calibrating reading (the first ``len(progress)`` rows), and for the other rows the
    detector's verdicts (``scored``) and the smoothed readings it scored."""

    detector: DeviceDetector
    progress: list[int]
    scored: detectors.Scored | None
    smoothed: np.ndarray


class DetectorStore:
    """Calibrates, fits, scores and resets per-device detectors (see the module doc)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def feed(
        self,
        model: str,
        version: str,
        device_id: str,
        recipe: Recipe,
        x: np.ndarray,
        *,
        owner: str,
    ) -> DetectorFeed:
        """Calibrate ``owner``'s device with the readings ``x`` (rows of ``recipe``'s
        features), fit its detector when the window is full, and score the rest."""
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValidationFailed(
                "a device's detector needs finite readings",
                details=[{"field": "features", "message": "not a finite number"}],
            )
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            row = await self._locked(session, model, version, device_id, recipe, owner, now)
            progress: list[int] = []
            fitted: detectors.DeviceModel | None = None
            if row.detector is None:
                take = min(row.required - row.seen, len(x))
                window = list(row.calibration or []) + x[:take].tolist()
                progress = list(range(row.seen + 1, row.seen + take + 1))
                row.seen += take
                if row.seen >= row.required:
                    calibration = np.asarray(window, dtype=np.float64)
                    # The recipe, with the device's own alarm settings if it has any.
                    params = detectors.DetectorParams.from_dict(effective_params(row.params))
                    fitted = detectors.fit(calibration, params)
                    row.detector = fitted.to_dict()
                    row.stream = detectors.initial_state(fitted, calibration).to_dict()
                    row.calibration = None
                    row.ready_at = now
                else:
                    row.calibration = window
            rest = x[len(progress) :]
            scored = None
            smoothed = rest
            if len(rest):
                assert row.detector is not None and row.stream is not None
                device_model = fitted or detectors.DeviceModel.from_dict(row.detector)
                state = detectors.StreamState.from_dict(row.stream)
                smoothed = detectors.moving_average(
                    rest, device_model.params.smoothing, state.recent if state.recent.size else None
                )
                scored = detectors.score(device_model, rest, state)
                row.stream = {**scored.state.to_dict(), "alarm": bool(scored.alarms[-1])}
                row.scored += len(rest)
                row.alarms += int(scored.alarms.sum())
            row.revision += 1
            row.updated_at = now
            await session.flush()
            detector = _from_row(row)
        return DetectorFeed(detector, progress, scored, smoothed)

    async def set_alarm(
        self,
        model: str,
        version: str,
        device_id: str,
        recipe: Recipe,
        *,
        quantile: float,
        margin: float,
        owner: str,
    ) -> DeviceDetector:
        """Give ``owner``'s device its own alarm quantile and margin (a device that has
        sent nothing yet gets a row, calibrating, that will be fitted with them)."""
        try:
            detectors.DetectorParams.from_dict(
                {**recipe.params.to_dict(), "quantile": quantile, "margin": margin}
            )
        except ValueError as exc:
            raise ValidationFailed(
                str(exc), details=[{"field": "quantile", "message": str(exc)}]
            ) from None
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            row = await self._locked(session, model, version, device_id, recipe, owner, now)
            own = {"quantile": quantile, "margin": margin}
            row.params = {**dict(row.params), DEVICE_ALARM: own}
            if row.detector is not None:
                fitted = detectors.DeviceModel.from_dict(row.detector)
                try:
                    changed = detectors.with_alarm(fitted, quantile=quantile, margin=margin)
                except ValueError as exc:
                    raise Conflict(str(exc), details={"field": "device_id"}) from None
                row.detector = changed.to_dict()
            row.revision += 1
            row.updated_at = now
            await session.flush()
            return _from_row(row)

    async def _locked(
        self,
        session: AsyncSession,
        model: str,
        version: str,
        device_id: str,
        recipe: Recipe,
        owner: str,
        now: datetime,
    ) -> DeviceDetectorRow:
        """The device's row, locked for this transaction (created, calibrating, if new);
        a 409 if it was made with another recipe than the version declares now."""
        values = {
            "model": model,
            "version": version,
            "device_id": device_id,
            "features": recipe.features,
            "params": recipe.params.to_dict(),
            "required": recipe.required,
            "seen": 0,
            "calibration": [],
            "scored": 0,
            "alarms": 0,
            "revision": 1,
            "created_at": now,
            "updated_at": now,
        }
        real = await owner_of(session, owner, device_id)
        row: DeviceDetectorRow = await lock_row(
            session, DeviceDetectorRow, {**values, "owner": real}, _KEYS
        )
        own = DEVICE_ALARM in row.params
        declared = _recipe_part(recipe.params.to_dict(), own)
        if list(row.features) != recipe.features or _recipe_part(row.params, own) != declared:
            raise Conflict(
                f"the detector of device {device_id!r} was made with another recipe "
                f"than model {model!r} version {version!r} now declares: reset it "
                f"(DELETE /v1/models/{model}/devices/{device_id}/detector"
                f"?version={version})",
                details={"field": "device_id", "detector_features": row.features},
            )
        return row

    async def get(
        self, model: str, version: str, device_id: str, *, owner: str
    ) -> DeviceDetector | None:
        """The stored detector of ``owner``'s device (or the device shared with it)."""
        async with self._sessions() as session:
            real = await owner_of(session, owner, device_id)
            row = await session.get(DeviceDetectorRow, (real, model, version, device_id))
            return None if row is None else _from_row(row)

    async def delete(self, model: str, version: str, device_id: str, *, owner: str) -> bool:
        """Forget a device's detector (it calibrates again); False if there was none."""
        async with self._sessions() as session, session.begin():
            real = await owner_of(session, owner, device_id)
            result = await session.execute(
                delete(DeviceDetectorRow).where(
                    DeviceDetectorRow.owner == real,
                    DeviceDetectorRow.model == model,
                    DeviceDetectorRow.version == version,
                    DeviceDetectorRow.device_id == device_id,
                )
            )
        return bool(getattr(result, "rowcount", 0))


def effective_params(params: dict[str, Any]) -> dict[str, Any]:
    """A row's stored recipe with the device's own alarm settings applied."""
    params = dict(params)
    own = params.pop(DEVICE_ALARM, None) or {}
    return {**params, **own}


def _recipe_part(params: dict[str, Any], own_alarm: bool) -> dict[str, Any]:
    """The parameters that must match the manifest's: all of them, but for the alarm
    settings when the device has its own."""
    skip = {DEVICE_ALARM, *(ALARM_PARAMS if own_alarm else ())}
    return {k: v for k, v in dict(params).items() if k not in skip}
