"""Counting predictions: a data plane observer that only bumps counters."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgate.dataplane.types import ClassificationOutput, InferenceEvent
from mlgate.observability.metrics import Metrics
from mlgate.registry.registry import ModelRegistry


class PredictionMetrics:
    """Rows by outcome, requests and data-plane time per model version and protocol."""

    def __init__(self, metrics: Metrics, registry: ModelRegistry) -> None:
        self.metrics = metrics
        self.registry = registry
        # (model, version, protocol) -> (requests child, duration child, outcome children)
        self._series: dict[tuple[str, str, str], tuple[Any, Any, list[Any]]] = {}

    def observe(self, event: InferenceEvent) -> None:
        if event.shadow:
            return  # never answered to anyone: the shadow's quality is the audit log's
        key = (event.model, event.version, event.protocol)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new_series(event)
        requests, duration, outcomes = series
        requests.inc()
        duration.observe(event.latency_ms / 1000)
        output = event.output
        if isinstance(output, ClassificationOutput):
            predicted = output.predicted
            if len(predicted) == 1:
                outcomes[int(predicted[0])].inc()
                return
            counts = np.bincount(predicted, minlength=len(outcomes))
            for i in np.flatnonzero(counts):
                outcomes[int(i)].inc(int(counts[i]))
            return
        anomalies = int(np.count_nonzero(output.is_anomaly))
        scored = output.rows if output.scored is None else int(np.count_nonzero(output.scored))
        if anomalies:
            outcomes[0].inc(anomalies)
        if scored - anomalies:
            outcomes[1].inc(scored - anomalies)
        if output.rows - scored:
            outcomes[2].inc(output.rows - scored)

    def _new_series(self, event: InferenceEvent) -> tuple[Any, Any, list[Any]]:
        model, version, protocol = event.model, event.version, event.protocol
        m = self.metrics
        outcomes = ["anomaly", "normal", "calibrating"]
        output = event.output
        if isinstance(output, ClassificationOutput):
            try:
                outcomes = list(self.registry.resolve(model, version).manifest.classes)
            except Exception:  # unloaded meanwhile: class indices stand for the names
                outcomes = []
            n_classes = output.probabilities.shape[1]
            outcomes += [str(i) for i in range(len(outcomes), n_classes)]
        return (
            m.inference_requests.labels(model, version, protocol),
            m.inference_duration.labels(model, version),
            [m.predictions.labels(model, version, protocol, name) for name in outcomes],
        )
