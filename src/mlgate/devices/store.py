"""Per-device baselines in the database, shared by every worker.

Consistency across workers:

- Calibration (a device's first ``required`` readings) always goes to the database, in
  one transaction that first takes a write lock on the device's row (PostgreSQL:
  ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE``; SQLite: the
  insert itself takes the database's write lock). Two workers adding readings at the
  same time are therefore serialised and no reading is lost or counted twice.
- A finished baseline is cached in the worker for ``cache_ttl_s`` (default 1 s). An
  upload or reset through any worker reaches every other worker within that time; the
  worker that handled it drops its copy at once.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mlgate.db.models import DeviceBaselineRow
from mlgate.errors import Conflict, ValidationFailed

DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
#: A sensor that did not move during calibration gets this floor as its std, relative to
#: its mean (absolute for means near 0), so that later readings stay finite when mapped.
STD_FLOOR_REL = 1e-6
STD_FLOOR_ABS = 1e-9


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


@dataclass(frozen=True)
class Baseline:
    """One device's baseline for one model (``mean``/``std`` None while calibrating)."""

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
        self._dialect = engine.dialect.name
        self.required = required
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[tuple[str, str], tuple[Baseline, float]] = {}

    def _cached(self, model: str, device_id: str) -> Baseline | None:
        hit = self._cache.get((model, device_id))
        if hit is None or time.monotonic() - hit[1] > self.cache_ttl_s:
            return None
        return hit[0]

    def _remember(self, baseline: Baseline) -> None:
        key = (baseline.model, baseline.device_id)
        if baseline.ready and self.cache_ttl_s > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = (baseline, time.monotonic())
        else:
            self._cache.pop(key, None)

    async def get(self, model: str, device_id: str) -> Baseline | None:
        """The stored baseline (read from the database, not the cache)."""
        async with self._sessions() as session:
            row = await session.get(DeviceBaselineRow, (model, device_id))
            return None if row is None else _from_row(row)

    async def _locked_row(
        self, session: AsyncSession, model: str, device_id: str, features: list[str]
    ) -> DeviceBaselineRow:
        now = datetime.now(UTC)
        values = {
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
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        # Also the write lock on SQLite: the first statement of the transaction writes.
        await session.execute(
            dialect_insert(DeviceBaselineRow).values(**values).on_conflict_do_nothing()
        )
        statement = (
            select(DeviceBaselineRow)
            .where(DeviceBaselineRow.model == model, DeviceBaselineRow.device_id == device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await session.execute(statement)).scalar_one()

    async def observe(
        self, model: str, device_id: str, features: list[str], x: np.ndarray
    ) -> Observation:
        """Add the readings ``x`` (rows in ``features`` order) to a calibrating baseline.

        Readings beyond the ones calibration still needs are not stored; the returned
        baseline (ready unless all rows went into calibration) scores them.
        """
        cached = self._cached(model, device_id)
        if cached is not None:
            return Observation(cached, [])
        async with self._sessions() as session, session.begin():
            row = await self._locked_row(session, model, device_id, features)
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
        self._remember(baseline)
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
    ) -> Baseline:
        """Store a finished baseline (an upload), replacing whatever was there."""
        for values in (mean, std):
            if not all(math.isfinite(v) for v in values.tolist()):
                raise ValidationFailed("baseline values must be finite")
        async with self._sessions() as session, session.begin():
            row = await self._locked_row(session, model, device_id, features)
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
        self._remember(baseline)
        return baseline

    async def delete(self, model: str, device_id: str) -> bool:
        """Forget a device's baseline (it calibrates again); False if there was none."""
        self._cache.pop((model, device_id), None)
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(DeviceBaselineRow).where(
                    DeviceBaselineRow.model == model, DeviceBaselineRow.device_id == device_id
                )
            )
        return bool(getattr(result, "rowcount", 0))
