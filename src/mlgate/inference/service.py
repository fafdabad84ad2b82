"""The inference service: what every transport (v1 REST, seed routes, CLI) calls.

It resolves the model version, validates the input, runs the model without stalling the
event loop, and formats results. It knows nothing about HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from mlgate.devices.scoring import DeviceScorer, device_spec
from mlgate.devices.store import check_device_id
from mlgate.errors import ModelExecutionError, ValidationFailed
from mlgate.inference.features import ParsedInput, parse_instances, parse_single
from mlgate.inference.results import (
    anomaly_results,
    calibrating_result,
    classification_results,
    summarize,
)
from mlgate.registry.registry import ModelRegistry, ModelVersion

log = logging.getLogger("mlgate.inference")


@dataclass(frozen=True, slots=True)
class Prediction:
    """Results of one request (one or many rows) against one model version."""

    model: ModelVersion
    results: list[dict[str, Any]]
    ignored_features: list[str]
    processing_time_ms: float

    def summary(self) -> dict[str, Any]:
        return summarize(self.model, self.results)


class InferenceService:
    """Validates inputs, runs models and formats their outputs."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch_rows: int,
        devices: DeviceScorer | None = None,
    ) -> None:
        self.registry = registry
        self.max_batch_rows = max_batch_rows
        self.devices = devices

    def resolve(self, model: str, version: str | None = None) -> ModelVersion:
        return self.registry.resolve(model, version)

    async def predict_one(
        self,
        model: str,
        features: Any,
        version: str | None = None,
        field: str = "features",
        device_id: Any = None,
        device_owner: str | None = None,
    ) -> Prediction:
        """Score one instance; with ``device_id``, against that device's baseline (of
        ``device_owner``, :func:`mlgate.devices.owners.device_owner` of the caller)."""
        started = time.perf_counter()
        if device_id is not None:
            device_id = check_device_id(device_id)
        mv = self.resolve(model, version)
        if device_id is not None:
            device_spec(mv)
        parsed = parse_single(features, mv, field)
        if device_id is not None:
            return await self._run_device(mv, parsed, device_id, device_owner, started)
        return await self._run(mv, parsed, started)

    async def predict_many(
        self,
        model: str,
        instances: Any,
        version: str | None = None,
        field: str = "instances",
        paths: Sequence[str] | None = None,
        device_id: Any = None,
        device_owner: str | None = None,
    ) -> Prediction:
        """Score a batch; with ``device_id`` the rows are that device's consecutive
        readings, in order."""
        started = time.perf_counter()
        if device_id is not None:
            device_id = check_device_id(device_id)
        mv = self.resolve(model, version)
        if device_id is not None:
            device_spec(mv)
        if isinstance(instances, list):
            if not instances:
                raise ValidationFailed(
                    f"{field} is empty: send at least one instance",
                    details=[{"field": field, "message": "empty batch"}],
                )
            if len(instances) > self.max_batch_rows:
                raise ValidationFailed(
                    f"{field} has {len(instances)} instances, the maximum is "
                    f"{self.max_batch_rows}: split the batch",
                    details=[
                        {
                            "field": field,
                            "message": "too many instances",
                            "max": self.max_batch_rows,
                            "got": len(instances),
                        }
                    ],
                )
        parsed = parse_instances(instances, mv, field, paths)
        if device_id is not None:
            return await self._run_device(mv, parsed, device_id, device_owner, started)
        return await self._run(mv, parsed, started)

    async def _run_device(
        self,
        mv: ModelVersion,
        parsed: ParsedInput,
        device_id: str,
        owner: str | None,
        started: float,
    ) -> Prediction:
        if self.devices is None:
            raise ValidationFailed(
                "this server does not keep device baselines",
                details=[{"field": "device_id", "message": "not supported"}],
            )
        if owner is None:
            raise ValueError("a device_id needs its device_owner")  # a caller's bug
        batch = await self.devices.prepare(mv, device_id, parsed.matrix, owner=owner)
        required = batch.baseline.required
        results = [calibrating_result(seen, required) for seen in batch.progress]
        if len(batch.model_input):
            raw = await self._scores(mv, batch.model_input)
            assert batch.baseline.mean is not None and batch.baseline.std is not None
            scored = anomaly_results(
                mv,
                raw,
                batch.smoothed,
                threshold=batch.spec.threshold,
                score_scale=batch.spec.score_scale,
                baseline=(batch.baseline.mean, batch.baseline.std),
            )
            results.extend({"status": "scored", **r} for r in scored)
        elapsed = (time.perf_counter() - started) * 1000
        return Prediction(mv, results, parsed.ignored, elapsed)

    async def _scores(self, mv: ModelVersion, x: Any) -> np.ndarray:
        try:
            if mv.inline and len(x) == 1:
                raw = mv.runtime.run(x)
            else:
                raw = await anyio.to_thread.run_sync(mv.runtime.run, x)
        except Exception:
            log.exception("model call failed", extra={"model": mv.name, "version": mv.version})
            raise ModelExecutionError(
                f"model {mv.name!r} version {mv.version!r} failed on this input"
            ) from None
        raw = np.asarray(raw, dtype=np.float64)
        if not np.all(np.isfinite(raw)):
            log.error("model returned non-finite output", extra={"model": mv.name})
            raise ModelExecutionError(
                f"model {mv.name!r} version {mv.version!r} produced no usable output"
            )
        return raw

    async def _run(self, mv: ModelVersion, parsed: ParsedInput, started: float) -> Prediction:
        x = parsed.matrix
        raw = await self._scores(mv, x)
        if mv.manifest.task == "classification":
            results = classification_results(mv, raw)
        else:
            results = anomaly_results(mv, raw, np.asarray(x, dtype=np.float64))
        elapsed = (time.perf_counter() - started) * 1000
        return Prediction(mv, results, parsed.ignored, elapsed)
