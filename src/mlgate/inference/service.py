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

from mlgate.errors import ModelExecutionError, ValidationFailed
from mlgate.inference.features import ParsedInput, parse_instances, parse_single
from mlgate.inference.results import anomaly_results, classification_results, summarize
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

    def __init__(self, registry: ModelRegistry, *, max_batch_rows: int) -> None:
        self.registry = registry
        self.max_batch_rows = max_batch_rows

    def resolve(self, model: str, version: str | None = None) -> ModelVersion:
        return self.registry.resolve(model, version)

    async def predict_one(
        self, model: str, features: Any, version: str | None = None, field: str = "features"
    ) -> Prediction:
        started = time.perf_counter()
        mv = self.resolve(model, version)
        parsed = parse_single(features, mv, field)
        return await self._run(mv, parsed, started)

    async def predict_many(
        self,
        model: str,
        instances: Any,
        version: str | None = None,
        field: str = "instances",
        paths: Sequence[str] | None = None,
    ) -> Prediction:
        started = time.perf_counter()
        mv = self.resolve(model, version)
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
        return await self._run(mv, parsed, started)

    async def _run(self, mv: ModelVersion, parsed: ParsedInput, started: float) -> Prediction:
        x = parsed.matrix
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
        if mv.manifest.task == "classification":
            results = classification_results(mv, raw)
        else:
            results = anomaly_results(mv, raw, np.asarray(x, dtype=np.float64))
        elapsed = (time.perf_counter() - started) * 1000
        return Prediction(mv, results, parsed.ignored, elapsed)
