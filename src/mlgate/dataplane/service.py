"""The data plane: the one inference path every protocol and the CLI go through.

``infer(model, version, payload, codec, context)``:

1. resolve the model version (404 / 503);
2. ``codec.decode``: the payload as a typed input (matrix, ignored fields, device id);
3. charge the rows to the caller - the one place rows are charged, after decoding, so
   malformed input costs no row allowance;
4. score: when the input names a device, the device's own detector (a version with
   ``device_detector``) or its baseline; else the prediction cache (when the model opts
   in) and the runner;
5. emit one :class:`~mlgate.dataplane.types.InferenceEvent` to every observer, and hand
   the request to the shadow (challenger) version, if the model has one;
6. ``codec.encode`` the typed result (with the response headers steps left in the
   context, e.g. ``X-Cache``).

It knows nothing about HTTP: transports build an
:class:`~mlgate.dataplane.types.InferenceContext`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlgate.context import bind_inference, cache_var, rows_var
from mlgate.dataplane.explaining import check_explainable, explanations
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
from mlgate.devices.scoring import DeviceScorer, serves_devices
from mlgate.errors import ValidationFailed
from mlgate.observability.tracing import step
from mlgate.registry.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from mlgate.cache.step import PredictionCache
    from mlgate.shadow.scorer import ShadowScorer

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
        cache: PredictionCache | None = None,
        shadow: ShadowScorer | None = None,
    ) -> None:
        self.registry = registry
        self.max_batch_rows = max_batch_rows
        self.runner = runner or Runner()
        self.devices = devices
        self.cache = cache
        self.shadow = shadow
        self._observers: list[InferenceObserver] = []
        self.tracer: Tracer | None = None
        """Opens a span per step (None: tracing off, one test per step)."""
        self.admission: Callable[[int], Awaitable[None]] | None = None
        """Awaited with the rows of every answered request before its event is emitted
        (the audit log's ``admit`` under ``when_full: wait``); may refuse it."""

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
        with step(self.tracer, "mlgate.encode", result.model):
            encoded = codec.encode(result, payload)
        if context.headers:
            encoded = replace(encoded, headers={**encoded.headers, **context.headers})
        return encoded

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
        tracer = self.tracer
        with step(tracer, "mlgate.decode", mv):
            inputs = codec.decode(payload, mv, self.max_batch_rows)
        rows_var.set(inputs.rows)
        if inputs.explain is not None:
            check_explainable(mv, inputs)
        owner = None
        if inputs.device_id is not None:
            owner = self._device_owner(mv, context)
        if context.charge_rows is not None:
            await context.charge_rows(inputs.rows)
        output: Output
        cache_hit = False
        if owner is not None:
            output = await self._score_device(mv, inputs, owner, context)
        else:
            output, cache_hit = await self._score(mv, inputs.matrix, context)
        explained = None
        if inputs.explain is not None:
            explained = await explanations(mv, inputs)
        elapsed_ms = (time.perf_counter() - context.started) * 1000
        result = InferenceResult(
            mv, inputs, output, elapsed_ms, context.request_id, new_key(), cache_hit, explained
        )
        if self._observers:
            if self.admission is not None:
                await self.admission(inputs.rows)
            # Nothing awaits from here to the queue: the room admission saw is still there.
            with step(tracer, "mlgate.audit.enqueue", mv, inputs.rows):
                self._emit(result, context)
        if self.shadow is not None and inputs.device_id is None:
            # Shadow hand-off: queued for the challenger, scored off the request path.
            self.shadow.submit(result, context)
        return result

    def _device_owner(self, mv: ModelVersion, context: InferenceContext) -> str:
        """Whose device the input names (401 for anonymous callers), once the model is
        known to keep device baselines (422 otherwise)."""
        if self.devices is None or context.principal is None:
            raise ValidationFailed(
                "device baselines are not kept here",
                details=[{"field": "device_id", "message": "not supported"}],
            )
        serves_devices(mv)
        return device_owner(context.principal)

    async def _score(
        self, mv: ModelVersion, x: np.ndarray, context: InferenceContext
    ) -> tuple[Output, bool]:
        """The output for ``x`` and whether it came from the prediction cache."""
        # Cache step: the raw output of an identical earlier request to this version.
        lookup = self.cache.lookup(mv, x, context) if self.cache is not None else None
        raw = None
        if lookup is not None:
            with step(self.tracer, "mlgate.cache", mv, len(x)) as span:
                raw = await lookup.get()
                if span is not None:
                    span.set_attribute("mlgate.cache", "miss" if raw is None else "hit")
        hit = raw is not None
        if lookup is not None:
            cache_var.set("hit" if hit else "miss")
        if raw is None:
            with step(self.tracer, "mlgate.inference", mv, len(x)):
                raw = await self.runner.run(mv, x, context.disconnected)
            if lookup is not None:
                await lookup.put(raw)
        return model_output(mv, raw, x), hit

    async def _score_device(
        self, mv: ModelVersion, inputs: InferenceInput, owner: str, context: InferenceContext
    ) -> AnomalyOutput:
        """Calibrate ``owner``'s device with its first readings, score the rest by its
        own detector or against its baseline."""
        assert self.devices is not None and inputs.device_id is not None
        if mv.manifest.device_detector is not None:
            return await self._detect_device(mv, inputs, owner)
        batch = await self.devices.prepare(mv, inputs.device_id, inputs.matrix, owner=owner)
        n = inputs.rows
        calibrating = len(batch.progress)
        spec, baseline = batch.spec, batch.baseline
        scores = np.full(n, np.nan)
        if len(batch.model_input):
            with step(self.tracer, "mlgate.inference", mv, len(batch.model_input)):
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

    async def _detect_device(
        self, mv: ModelVersion, inputs: InferenceInput, owner: str
    ) -> AnomalyOutput:
        """The device's own detector: its first readings calibrate it, the rest get its
        debounced alarms. Explanations compare the (smoothed) readings of the detector's
        sensors with the device's calibration mean and spread."""
        assert self.devices is not None and inputs.device_id is not None
        recipe, feed = await self.devices.detect(mv, inputs.device_id, inputs.matrix, owner=owner)
        n, calibrating = inputs.rows, len(feed.progress)
        scores = np.full(n, np.nan)
        is_anomaly = np.zeros(n, dtype=bool)
        readings = np.asarray(inputs.matrix, dtype=np.float64).copy()
        width = readings.shape[1]
        center = spread = None
        threshold = float("nan")
        model = feed.detector.model
        if model is not None:
            threshold = float(model.threshold)
            center, spread = np.full(width, np.nan), np.full(width, np.nan)
            center[recipe.columns], spread[recipe.columns] = model.mean, model.std
        if feed.scored is not None:
            scores[calibrating:] = feed.scored.scores
            is_anomaly[calibrating:] = feed.scored.alarms
            readings[calibrating:, recipe.columns] = feed.smoothed
        seen = np.zeros(n, dtype=np.int64)
        seen[:calibrating] = feed.progress
        return AnomalyOutput(
            scores=scores,
            is_anomaly=is_anomaly,
            confidence=confidence_of(scores, threshold, max(threshold, 1e-12)),
            threshold=threshold,
            readings=readings,
            center=center,
            spread=spread,
            relative_to_device=True,
            scored=np.arange(n) >= calibrating,
            calibration_seen=seen,
            calibration_required=feed.detector.required,
            device_detector=True,
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
        self.notify(event)

    def notify(self, event: InferenceEvent) -> None:
        """Hand ``event`` to every observer (also used for shadow answers)."""
        for observer in self._observers:
            try:
                observer.observe(event)
            except Exception:
                # An observer's bug must never fail the request it observes.
                log.exception("inference observer failed", extra={"observer": repr(observer)})


def model_output(mv: ModelVersion, raw: np.ndarray, x: np.ndarray) -> Output:
    """The typed output of ``mv``'s raw answer for ``x``."""
    if mv.manifest.task == "classification":
        return classification_output(mv, raw)
    return anomaly_output(mv, raw, x)


def local_dataplane(
    repository: Path, *, default_model: str = "ids", max_batch_rows: int = 1_000_000
) -> DataPlane:
    """A data plane over a model repository, for scoring in-process (no server, no
    caller to charge, no device baselines): the CLI's path to the same validation,
    substitution rules and outputs as the HTTP routes."""
    registry = ModelRegistry(repository, default_model=default_model, inline_threshold_us=0.0)
    registry.reload()
    return DataPlane(registry, max_batch_rows=max_batch_rows)
