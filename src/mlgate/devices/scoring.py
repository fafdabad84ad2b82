"""Turning a device's readings into verdicts: against its baseline, or by its own detector.

Baselines (a version with ``device_baseline``): a reading is smoothed over the device's
window, standardised by the device's baseline and mapped onto the training distribution
of the model (``x' = reference.mean + (x - device.mean) / device.std * reference.std``),
so that the global detector sees every device at the operating point it was trained on.

Detectors (a version with ``device_detector``, which takes precedence): the device's
own detector, fitted on its calibration window, scores its readings
(:mod:`mlgate.devices.detector_store`); the model's global detector is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgate.devices.detector_store import DetectorFeed, DetectorStore, Recipe
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


def serves_devices(mv: ModelVersion) -> None:
    """Nothing if the version scores devices (by detector or baseline), else a 422."""
    if mv.manifest.device_detector is None:
        device_spec(mv)


def device_spec(mv: ModelVersion) -> DeviceBaseline:
    """The model version's device-baseline settings, or a 422 if it has none."""
    spec = mv.manifest.device_baseline
    if spec is None or mv.reference_mean is None or mv.reference_std is None:
        raise ValidationFailed(
            f"model {mv.name!r} version {mv.version!r} does not score against device "
            "baselines: leave out device_id or use a version that declares device_baseline "
            "or device_detector",
            details=[{"field": "device_id", "message": "model has no device baselines"}],
        )
    return spec


class DeviceScorer:
    """Calibrates devices (in the store) and prepares their readings for the model."""

    def __init__(
        self, store: BaselineStore, windows: ReadingWindows, detectors: DetectorStore
    ) -> None:
        self.store = store
        self.windows = windows
        self.detectors = detectors
        self._recipes: dict[int, tuple[ModelVersion, Recipe]] = {}

    def recipe(self, mv: ModelVersion) -> Recipe:
        """The version's ``device_detector`` recipe (a 422 if it has none)."""
        hit = self._recipes.get(id(mv))
        if hit is not None and hit[0] is mv:
            return hit[1]
        spec = mv.manifest.device_detector
        if spec is None:
            raise ValidationFailed(
                f"model {mv.name!r} version {mv.version!r} has no per-device detectors: "
                "use a version that declares device_detector",
                details=[{"field": "version", "message": "model has no device detectors"}],
            )
        recipe = Recipe.of(spec, mv.manifest.feature_names)
        if len(self._recipes) > 1000:
            self._recipes.clear()
        self._recipes[id(mv)] = (mv, recipe)
        return recipe

    async def detect(
        self, mv: ModelVersion, device_id: str, x: np.ndarray, *, owner: str
    ) -> tuple[Recipe, DetectorFeed]:
        """Feed ``owner``'s device ``device_id`` the readings ``x`` (rows of all the
        model's features): calibration, then its own detector's verdicts."""
        recipe = self.recipe(mv)
        columns = np.asarray(x, dtype=np.float64)[:, recipe.columns]
        feed = await self.detectors.feed(
            mv.name, mv.version, device_id, recipe, columns, owner=owner
        )
        return recipe, feed

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
