"""The data plane: the one inference path every protocol and the CLI go through.

``infer(model, version, payload, codec, context)``:

1. resolve the model version (404 / 503);
2. ``codec.decode``: the payload as a typed input (matrix, ignored fields, device id);
3. charge the rows to the caller - the one place rows are charged, after decoding, so
   malformed input costs no row allowance;
4. score: per-device baselines when the input names a device, else the runner;
5. emit one :class:`~mlgate.dataplane.types.InferenceEvent` to every observer;
6. ``codec.encode`` the typed result.

It knows nothing about HTTP: transports build an
:class:`~mlgate.dataplane.types.InferenceContext`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.context import bind_inference
from mlgate.dataplane.ids import new_key
from mlgate.dataplane.outputs import anomaly_output, classification_output, confidence_of
from mlgate.dataplane.runner import Runner
from mlgate.dataplane.types import (
    AnomalyOutput,
    Codec,
    Encoded,
    InferenceContext,
    InferenceEvent,
    InferenceInput,
    InferenceObserver,
    InferenceResult,
    Output,
)
from mlgate.devices.owners import device_owner
from mlgate.devices.scoring import DeviceScorer, device_spec
from mlgate.errors import ValidationFailed
from mlgate.registry.registry import ModelRegistry, ModelVersion

log = logging.getLogger("mlgate.dataplane")


class DataPlane:
    """Resolves, decodes, charges, scores, notifies observers and encodes."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch_rows: int,
        runner: Runner | None = None,
        devices: DeviceScorer | None = None,
    ) -> None:
        self.registry = registry
        self.max_batch_rows = max_batch_rows
        self.runner = runner or Runner()
        self.devices = devices
        self._observers: list[InferenceObserver] = []

    def add_observer(self, observer: InferenceObserver) -> None:
        """Receive an event for every answered inference request."""
        self._observers.append(observer)

    def remove_observer(self, observer: InferenceObserver) -> None:
        self._observers.remove(observer)

    def resolve(self, model: str, version: str | None = None) -> ModelVersion:
        """The version a request means (404 unknown, 503 still loading)."""
        return self.registry.resolve(model, version)

    async def infer(
        self,
        model: str,
        version: str | None,
        payload: Any,
        codec: Codec,
        context: InferenceContext,
    ) -> Encoded:
        """Score ``payload`` with ``model`` (version or alias) and encode the answer."""
        result = await self.score(model, version, payload, codec, context)
        return codec.encode(result, payload)

    async def score(
        self,
        model: str,
        version: str | None,
        payload: Any,
        codec: Codec,
        context: InferenceContext,
    ) -> InferenceResult:
        """Steps 1-5 of :meth:`infer`: the typed result, before encoding."""
        mv = self.registry.resolve(model, version)
        bind_inference(mv.name, mv.version, context.protocol)
        inputs = codec.decode(payload, mv, self.max_batch_rows)
        owner = None
        if inputs.device_id is not None:
            owner = self._device_owner(mv, context)
        if context.charge_rows is not None:
            await context.charge_rows(inputs.rows)
        output: Output
        if owner is not None:
            output = await self._score_device(mv, inputs, owner, context)
        else:
            output = await self._score(mv, inputs.matrix, context)
        elapsed_ms = (time.perf_counter() - context.started) * 1000
        result = InferenceResult(mv, inputs, output, elapsed_ms, context.request_id, new_key())
        if self._observers:
            self._emit(result, context)
        return result

    def _device_owner(self, mv: ModelVersion, context: InferenceContext) -> str:
        """Whose device the input names (401 for anonymous callers), once the model is
        known to keep device baselines (422 otherwise)."""
        if self.devices is None or context.principal is None:
            raise ValidationFailed(
                "device baselines are not kept here",
                details=[{"field": "device_id", "message": "not supported"}],
            )
        device_spec(mv)
        return device_owner(context.principal)

    async def _score(self, mv: ModelVersion, x: np.ndarray, context: InferenceContext) -> Output:
        raw = await self.runner.run(mv, x, context.disconnected)
        if mv.manifest.task == "classification":
            return classification_output(mv, raw)
        return anomaly_output(mv, raw, x)

    async def _score_device(
        self, mv: ModelVersion, inputs: InferenceInput, owner: str, context: InferenceContext
    ) -> AnomalyOutput:
        """Calibrate ``owner``'s device with its first readings, score the rest against
        its baseline."""
        assert self.devices is not None and inputs.device_id is not None
        batch = await self.devices.prepare(mv, inputs.device_id, inputs.matrix, owner=owner)
        n = inputs.rows
        calibrating = len(batch.progress)
        spec, baseline = batch.spec, batch.baseline
        scores = np.full(n, np.nan)
        if len(batch.model_input):
            scores[calibrating:] = await self.runner.run(
                mv, batch.model_input, context.disconnected
            )
        scored = np.arange(n) >= calibrating
        seen = np.zeros(n, dtype=np.int64)
        seen[:calibrating] = batch.progress
        readings = np.asarray(inputs.matrix, dtype=np.float64).copy()
        readings[calibrating:] = batch.smoothed
        scale = float(spec.score_scale or mv.manifest.score_scale or 1.0)
        with np.errstate(invalid="ignore"):
            is_anomaly = scored & (scores >= spec.threshold)
        return AnomalyOutput(
            scores=scores,
            is_anomaly=is_anomaly,
            confidence=confidence_of(scores, spec.threshold, scale),
            threshold=spec.threshold,
            readings=readings,
            center=baseline.mean,
            spread=baseline.std,
            relative_to_device=True,
            scored=scored,
            calibration_seen=seen,
            calibration_required=baseline.required,
        )

    def _emit(self, result: InferenceResult, context: InferenceContext) -> None:
        mv = result.model
        event = InferenceEvent(
            request_id=context.request_id,
            principal=context.principal,
            protocol=context.protocol,
            model=mv.name,
            version=mv.version,
            task=mv.manifest.task,
            rows=result.inputs.rows,
            latency_ms=result.processing_time_ms,
            timestamp=time.time(),
            inputs=result.inputs,
            output=result.output,
            prediction_key=result.prediction_key,
            device_id=result.inputs.device_id,
            cache_hit=result.cache_hit,
        )
        for observer in self._observers:
            try:
                observer.observe(event)
            except Exception:
                # An observer's bug must never fail the request it observes.
                log.exception("inference observer failed", extra={"observer": repr(observer)})


def local_dataplane(
    repository: Path, *, default_model: str = "ids", max_batch_rows: int = 1_000_000
) -> DataPlane:
    """A data plane over a model repository, for scoring in-process (no server, no
    caller to charge, no device baselines): the CLI's path to the same validation,
    substitution rules and outputs as the HTTP routes."""
    registry = ModelRegistry(repository, default_model=default_model, inline_threshold_us=0.0)
    registry.reload()
    return DataPlane(registry, max_batch_rows=max_batch_rows)
