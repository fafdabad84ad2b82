"""Per-device baselines: a DB-backed store, per-worker reading windows, and scoring."""

from __future__ import annotations

from mlgate.devices.scoring import DeviceBatch, DeviceScorer, device_spec
from mlgate.devices.store import (
    DEVICE_ID_PATTERN,
    Baseline,
    BaselineStore,
    Observation,
    check_device_id,
)
from mlgate.devices.windows import ReadingWindows

__all__ = [
    "DEVICE_ID_PATTERN",
    "Baseline",
    "BaselineStore",
    "DeviceBatch",
    "DeviceScorer",
    "Observation",
    "ReadingWindows",
    "check_device_id",
    "device_spec",
]
