"""Per-device baselines and detectors: DB-backed stores, per-worker reading windows, and
scoring."""

from __future__ import annotations

from mlgate.devices.detector_store import DetectorFeed, DetectorStore, DeviceDetector, Recipe
from mlgate.devices.owners import UNOWNED, check_owner, device_owner
from mlgate.devices.scoring import DeviceBatch, DeviceScorer, device_spec, serves_devices
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
    "DetectorFeed",
    "DetectorStore",
    "DeviceBatch",
    "DeviceDetector",
    "DeviceScorer",
    "DeviceShare",
    "Observation",
    "ReadingWindows",
    "Recipe",
    "check_device_id",
    "check_owner",
    "device_owner",
    "device_spec",
    "serves_devices",
]
