"""Per-device baselines in the database, shared by every worker (and the row helpers the
per-device detectors share: :func:`owner_of`, :func:`lock_row`).

Consistency across workers:

- Calibration (a device's first ``required`` readings) always goes to the database, in
  one transaction that first takes a write lock on the device's row (PostgreSQL:
  ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE``; SQLite: the
  insert itself takes the database's write lock). Two workers adding readings at the
  same time are therefore serialised and no reading is lost or counted twice.
- A finished baseline is cached in the worker for ``cache_ttl_s`` (default 1 s). An
  upload, a reset or a change of device shares through any worker reaches every other
  worker within that time; the worker that handled it drops its copies at once.

Every method takes the ``owner`` asking (see :mod:`mlgate.devices.owners`): rows are
keyed by (owner, model, device id), and a device share turns the asking owner's id into
another owner's device, in the same transaction that reads or locks the row.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mlgate.db.engine import dialect_insert
from mlgate.db.models import DeviceBaselineRow, DeviceShareRow
from mlgate.errors import Conflict, ValidationFailed

DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
#: A sensor that did not move during calibration gets this floor as its std, relative to
#: its mean (absolute for means near 0), so that later readings stay finite when mapped.
STD_FLOOR_REL = 1e-6
STD_FLOOR_ABS = 1e-9
_Row = TypeVar("_Row")


def check_device_id(value: Any, field: str = "device_id") -> str:
    """The device id, or a 422 naming ``field`` and the allowed pattern."""
    if not isinstance(value, str) or not _DEVICE_ID.match(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise ValidationFailed(
            f"{field} must match {DEVICE_ID_PATTERN} (1-128 letters, digits, '.', '_', ':', '-'),"
            f" got {shown!r}"[:300],
            details=[
                {"field": field, "message": "invalid device id", "pattern": DEVICE_ID_PATTERN}
            ],
        )
    return value


def std_floor(mean: np.ndarray) -> np.ndarray:
    return np.maximum(STD_FLOOR_ABS, STD_FLOOR_REL * np.abs(mean))


async def owner_of(session: AsyncSession, owner: str, device_id: str) -> str:
    """Whose device ``owner``'s ``device_id`` is: a share's owner, or ``owner``."""
    shared = await session.scalar(
        select(DeviceShareRow.owner).where(
            DeviceShareRow.grantee == owner, DeviceShareRow.device_id == device_id
        )
    )
    return shared or owner


async def lock_row(
    session: AsyncSession, table: type[_Row], values: dict[str, Any], keys: tuple[str, ...]
) -> _Row:
    """The row of ``table`` whose ``keys`` columns equal ``values``' (inserted from
    ``values`` if missing), locked until the transaction ends.

    PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE``;
    SQLite: the insert, the transaction's first statement, takes the write lock.
    """
    dialect = session.get_bind().dialect.name
    insert = dialect_insert(dialect)
    await session.execute(insert(table).values(**values).on_conflict_do_nothing())
    statement = (
        select(table)
        .filter_by(**{key: values[key] for key in keys})
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one()


@dataclass(frozen=True)
class Baseline:
    """One device's baseline for one model (``mean``/``std`` None while calibrating)."""

    owner: str
    model: str
    device_id: str
    features: list[str]
    required: int
    seen: int
    mean: np.ndarray | None
    std: np.ndarray | None
    source: str
    revision: int
    updated_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.mean is not None and self.std is not None

    def view(self) -> dict[str, Any]:
        """The JSON shape the API returns."""
        out: dict[str, Any] = {
            "owner": self.owner,
            "model": self.model,
            "device_id": self.device_id,
            "status": "ready" if self.ready else "calibrating",
            "source": self.source,
            "calibration": {"seen": self.seen, "required": self.required},
            "revision": self.revision,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
        if self.ready:
            assert self.mean is not None and self.std is not None
            out["baseline"] = {
                name: {"mean": float(m), "std": float(s)}
                for name, m, s in zip(self.features, self.mean, self.std, strict=True)
            }
        return out


def _from_row(row: DeviceBaselineRow) -> Baseline:
    return Baseline(
        owner=row.owner,
        model=row.model,
        device_id=row.device_id,
        features=list(row.features),
        required=row.required,
        seen=row.seen,
        mean=None if row.mean is None else np.asarray(row.mean, dtype=np.float64),
        std=None if row.std is None else np.asarray(row.std, dtype=np.float64),
        source=row.source,
        revision=row.revision,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True)
class Observation:
    """What one batch of readings did to a device: the progress after each calibrating
    reading (the first ``len(progress)`` rows) and the baseline for the rest."""

    baseline: Baseline
    progress: list[int]


class BaselineStore:
    """Reads, accumulates, uploads and resets device baselines (see the module doc)."""

    def __init__(self, engine: AsyncEngine, *, required: int, cache_ttl_s: float) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.required = required
        self.cache_ttl_s = cache_ttl_s
        # Keyed by the owner asking (a grantee's entry holds the shared device).
        self._cache: dict[tuple[str, str, str], tuple[Baseline, float]] = {}

    def _cached(self, owner: str, model: str, device_id: str) -> Baseline | None:
        hit = self._cache.get((owner, model, device_id))
        if hit is None or time.monotonic() - hit[1] > self.cache_ttl_s:
            return None
        return hit[0]

    def _remember(self, owner: str, baseline: Baseline) -> None:
        key = (owner, baseline.model, baseline.device_id)
        if baseline.ready and self.cache_ttl_s > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = (baseline, time.monotonic())
        else:
            self._cache.pop(key, None)

    async def get(self, model: str, device_id: str, *, owner: str) -> Baseline | None:
        """The stored baseline (read from the database, not the cache)."""
        async with self._sessions() as session:
            real = await owner_of(session, owner, device_id)
            row = await session.get(DeviceBaselineRow, (real, model, device_id))
            return None if row is None else _from_row(row)

    async def _locked_row(
        self, session: AsyncSession, owner: str, model: str, device_id: str, features: list[str]
    ) -> DeviceBaselineRow:
        now = datetime.now(UTC)
        values = {
            "owner": owner,
            "model": model,
            "device_id": device_id,
            "features": features,
            "required": self.required,
            "seen": 0,
            "sums": [0.0] * len(features),
            "sumsq": [0.0] * len(features),
            "source": "stream",
            "revision": 1,
            "created_at": now,
            "updated_at": now,
        }
        return await lock_row(session, DeviceBaselineRow, values, ("owner", "model", "device_id"))

    async def observe(
        self, model: str, device_id: str, features: list[str], x: np.ndarray, *, owner: str
    ) -> Observation:
        """Add the readings ``x`` (rows in ``features`` order) to a calibrating baseline.

        Readings beyond the ones calibration still needs are not stored; the returned
        baseline (ready unless all rows went into calibration) scores them.
        """
        cached = self._cached(owner, model, device_id)
        if cached is not None:
            return Observation(cached, [])
        async with self._sessions() as session, session.begin():
            real = await owner_of(session, owner, device_id)
            row = await self._locked_row(session, real, model, device_id, features)
            if list(row.features) != features:
                raise Conflict(
                    f"the baseline of device {device_id!r} was made for features "
                    f"{row.features}, the model now has {features}: reset it "
                    f"(DELETE /v1/models/{model}/devices/{device_id}/baseline)",
                    details={"field": "device_id", "baseline_features": row.features},
                )
            progress: list[int] = []
            if row.mean is None:
                take = min(row.required - row.seen, len(x))
                part = np.asarray(x[:take], dtype=np.float64)
                sums = np.asarray(row.sums) + part.sum(axis=0)
                sumsq = np.asarray(row.sumsq) + (part * part).sum(axis=0)
                progress = list(range(row.seen + 1, row.seen + take + 1))
                row.seen += take
                row.sums = sums.tolist()
                row.sumsq = sumsq.tolist()
                if row.seen >= row.required:
                    mean = sums / row.seen
                    std = np.sqrt(np.maximum(sumsq / row.seen - mean * mean, 0.0))
                    row.mean = mean.tolist()
                    row.std = np.maximum(std, std_floor(mean)).tolist()
                    row.ready_at = datetime.now(UTC)
                row.revision += 1
                await session.flush()
            baseline = _from_row(row)
        self._remember(owner, baseline)
        return Observation(baseline, progress)

    async def put(
        self,
        model: str,
        device_id: str,
        features: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        *,
        seen: int,
        owner: str,
    ) -> Baseline:
        """Store a finished baseline (an upload), replacing whatever was there."""
        for values in (mean, std):
            if not all(math.isfinite(v) for v in values.tolist()):
                raise ValidationFailed("baseline values must be finite")
        async with self._sessions() as session, session.begin():
            real = await owner_of(session, owner, device_id)
            row = await self._locked_row(session, real, model, device_id, features)
            row.features = features
            row.seen = seen
            row.required = seen
            row.sums = (mean * seen).tolist()
            row.sumsq = ((std * std + mean * mean) * seen).tolist()
            row.mean = mean.tolist()
            row.std = std.tolist()
            row.source = "upload"
            row.revision += 1
            row.ready_at = datetime.now(UTC)
            await session.flush()
            baseline = _from_row(row)
        # Grantees of this device may hold the old one: forget every copy of this worker.
        self._cache.clear()
        return baseline

    async def delete(self, model: str, device_id: str, *, owner: str) -> str | None:
        """Forget a device's baseline (it calibrates again); returns whose device it was,
        None if there was none."""
        self._cache.clear()
        async with self._sessions() as session, session.begin():
            real = await owner_of(session, owner, device_id)
            result = await session.execute(
                delete(DeviceBaselineRow).where(
                    DeviceBaselineRow.owner == real,
                    DeviceBaselineRow.model == model,
                    DeviceBaselineRow.device_id == device_id,
                )
            )
        return real if getattr(result, "rowcount", 0) else None

    # -- shares ---------------------------------------------------------------------------

    async def share(self, grantee: str, device_id: str, owner: str) -> DeviceShare:
        """Let ``grantee`` use ``owner``'s device ``device_id`` (replacing an earlier
        share of that id with the grantee). 409 for chains: ``owner``'s id must not be
        shared from someone else, nor ``grantee``'s shared onward."""
        async with self._sessions() as session, session.begin():
            chained = await session.scalar(
                select(DeviceShareRow.grantee).where(
                    DeviceShareRow.device_id == device_id,
                    or_(DeviceShareRow.grantee == owner, DeviceShareRow.owner == grantee),
                )
            )
            if chained is not None:
                raise Conflict(
                    f"device {device_id!r} of {owner} or {grantee} is already in another "
                    "share: share a device from its real owner, to owners that do not "
                    "share it onward",
                    details={"device_id": device_id, "owner": owner, "grantee": grantee},
                )
            row = await session.get(DeviceShareRow, (grantee, device_id))
            if row is None:
                row = DeviceShareRow(grantee=grantee, device_id=device_id, owner=owner)
                session.add(row)
            else:
                row.owner = owner
                row.created_at = datetime.now(UTC)
            await session.flush()
            shared = _share(row)
        self._cache.clear()
        return shared

    async def unshare(self, grantee: str, device_id: str) -> bool:
        """End a share; False if there was none."""
        self._cache.clear()
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(DeviceShareRow).where(
                    DeviceShareRow.grantee == grantee, DeviceShareRow.device_id == device_id
                )
            )
        return bool(getattr(result, "rowcount", 0))

    async def shares(
        self,
        *,
        owner: str | None = None,
        grantee: str | None = None,
        device_id: str | None = None,
    ) -> list[DeviceShare]:
        """Shares, filtered by whichever of owner, grantee and device id are given."""
        query = select(DeviceShareRow).order_by(DeviceShareRow.owner, DeviceShareRow.device_id)
        if owner is not None:
            query = query.where(DeviceShareRow.owner == owner)
        if grantee is not None:
            query = query.where(DeviceShareRow.grantee == grantee)
        if device_id is not None:
            query = query.where(DeviceShareRow.device_id == device_id)
        async with self._sessions() as session:
            return [_share(row) for row in await session.scalars(query)]


@dataclass(frozen=True)
class DeviceShare:
    """For ``grantee``, device id ``device_id`` means ``owner``'s device."""

    grantee: str
    device_id: str
    owner: str
    created_at: datetime | None

    def view(self) -> dict[str, Any]:
        return {
            "grantee": self.grantee,
            "device_id": self.device_id,
            "owner": self.owner,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def _share(row: DeviceShareRow) -> DeviceShare:
    return DeviceShare(row.grantee, row.device_id, row.owner, row.created_at)
