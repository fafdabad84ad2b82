"""Turning a device's readings into model input relative to its baseline.

A reading is smoothed over the device's window, standardised by the device's baseline
and mapped onto the training distribution of the model
(``x' = reference.mean + (x - device.mean) / device.std * reference.std``), so that the
global detector sees every device at the operating point it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgate.devices.store import Baseline, BaselineStore
from mlgate.devices.windows import ReadingWindows
from mlgate.errors import ValidationFailed
from mlgate.registry.manifest import DeviceBaseline
from mlgate.registry.registry import ModelVersion


@dataclass(frozen=True)
class DeviceBatch:
    """One request's readings of one device: calibration progress of the first rows,
    and for the remaining rows the model input and the smoothed readings."""

    spec: DeviceBaseline
    baseline: Baseline
    progress: list[int]
    model_input: np.ndarray
    smoothed: np.ndarray


def device_spec(mv: ModelVersion) -> DeviceBaseline:
    """The model version's device-baseline settings, or a 422 if it has none."""
    spec = mv.manifest.device_baseline
    if spec is None or mv.reference_mean is None or mv.reference_std is None:
        raise ValidationFailed(
            f"model {mv.name!r} version {mv.version!r} does not score against device "
            "baselines: leave out device_id or use a version that declares device_baseline",
            details=[{"field": "device_id", "message": "model has no device baselines"}],
        )
    return spec


class DeviceScorer:
    """Calibrates devices (in the store) and prepares their readings for the model."""

    def __init__(self, store: BaselineStore, windows: ReadingWindows) -> None:
        self.store = store
        self.windows = windows

    async def prepare(
        self, mv: ModelVersion, device_id: str, x: np.ndarray, *, owner: str
    ) -> DeviceBatch:
        """Calibrate ``owner``'s device ``device_id`` with the readings ``x`` (rows), or
        map them onto the model's training data once its baseline is ready.

        ``owner`` is :func:`mlgate.devices.owners.device_owner` of the caller: the id
        names that owner's device (or, through an admin's share, the device it shares).
        """
        spec = device_spec(mv)
        x = np.asarray(x, dtype=np.float64)
        observed = await self.store.observe(
            mv.name, device_id, mv.manifest.feature_names, x, owner=owner
        )
        baseline = observed.baseline
        # Keyed by the device's real owner, so a shared device has one window.
        smoothed = self.windows.smooth((baseline.owner, mv.name, device_id), x, spec.window)
        rest = smoothed[len(observed.progress) :]
        if not len(rest):
            return DeviceBatch(spec, baseline, observed.progress, rest, rest)
        assert baseline.mean is not None and baseline.std is not None
        assert mv.reference_mean is not None and mv.reference_std is not None
        mapped = mv.reference_mean + (rest - baseline.mean) / baseline.std * mv.reference_std
        return DeviceBatch(
            spec, baseline, observed.progress, mapped.astype(mv.runtime.input_dtype), rest
        )
