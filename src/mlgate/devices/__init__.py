"""Per-device baselines: a DB-backed store, per-worker reading windows, and scoring."""

from __future__ import annotations

from mlgate.devices.owners import UNOWNED, check_owner, device_owner
from mlgate.devices.scoring import DeviceBatch, DeviceScorer, device_spec
from mlgate.devices.store import (
    DEVICE_ID_PATTERN,
    Baseline,
    BaselineStore,
    DeviceShare,
    Observation,
    check_device_id,
)
from mlgate.devices.windows import ReadingWindows

__all__ = [
    "DEVICE_ID_PATTERN",
    "UNOWNED",
    "Baseline",
    "BaselineStore",
    "DeviceBatch",
    "DeviceScorer",
    "DeviceShare",
    "Observation",
    "ReadingWindows",
    "check_device_id",
    "check_owner",
    "device_owner",
    "device_spec",
]
