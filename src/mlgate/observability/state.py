"""Metrics that describe a state rather than count events, read when scraped.

Two kinds:

- **this worker's own state** that its components already keep as plain integers (audit
  queue depth and drops, principal-cache hits and misses): :meth:`StateMetrics.sample`
  publishes it (a gauge set, counters increased by what changed since the last sample).
  A scrape samples the worker that answers it; with several workers each also samples
  itself every ``sample_interval_s``, so the others are at most that old;
- **shared state** (the same whichever worker is asked): model load times from the
  registry's snapshot, and from the database drift scores per feature, feedback counts
  and live accuracy per model version - refreshed by :meth:`StateMetrics.refresh` at
  most every ``refresh_interval_s`` and exposed by :meth:`StateMetrics.collect` (only the
  scraping worker reports them, so nothing is counted twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlgate.observability.metrics import Metrics

if TYPE_CHECKING:
    from mlgate.api.state import AppState

log = logging.getLogger("mlgate.metrics")


@dataclass
class _Shared:
    drift: dict[tuple[str, str, str], float] = field(default_factory=dict)
    feedback: dict[tuple[str, str], int] = field(default_factory=dict)
    accuracy: dict[tuple[str, str], float] = field(default_factory=dict)


class StateMetrics(Collector):
    """Samples this worker's state and exposes the shared state of the app."""

    def __init__(self, metrics: Metrics, state: AppState, refresh_interval_s: float) -> None:
        self.metrics = metrics
        self.state = state
        self.refresh_interval_s = refresh_interval_s
        self._shared = _Shared()
        self._refreshed_at: float | None = None
        self._lock = asyncio.Lock()
        self._seen: dict[str, int] = {}

    # -- this worker -----------------------------------------------------------------

    def sample(self) -> None:
        """Publish this worker's queue depth and what its counters gained."""
        m = self.metrics
        audit = self.state.audit.log if self.state.audit is not None else None
        if audit is not None:
            m.audit_queue_depth.set(audit.depth)
            self._add(m.audit_dropped, "audit_dropped", audit.overflow)
        principals = self.state.auth.cache
        self._add(m.principal_cache.labels("hit"), "principal_hit", principals.hits)
        self._add(m.principal_cache.labels("miss"), "principal_miss", principals.misses)

    def _add(self, counter: object, name: str, total: int) -> None:
        gained = total - self._seen.get(name, 0)
        if gained > 0:
            counter.inc(gained)  # type: ignore[attr-defined]
        self._seen[name] = total

    async def run_sampler(self, interval_s: float) -> None:
        """Sample every ``interval_s`` (a worker among several)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.sample()
            except Exception:
                log.exception("metrics sampling failed")

    # -- shared ----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Recompute the database-backed gauges, unless done less than the interval ago."""
        async with self._lock:
            now = time.monotonic()
            if (
                self._refreshed_at is not None
                and now - self._refreshed_at < self.refresh_interval_s
            ):
                return
            shared = _Shared()
            try:
                await self._drift(shared)
                await self._quality(shared)
            except Exception as exc:
                # The database is away: keep showing the last values (readiness says why).
                log.warning(
                    "metrics from the database could not be refreshed",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
                )
                return
            self._shared = shared
            self._refreshed_at = now

    async def _drift(self, shared: _Shared) -> None:
        from mlgate.drift.report import drift_report

        signals = self.state.signals
        if signals.drift is None:
            return
        await signals.drift.flush()
        settings = self.state.settings.drift
        now = time.time()
        for entry in self.state.registry.models():
            for mv in entry.versions.values():
                report = await drift_report(
                    mv, signals.drift_store, settings, settings.default_window_s, now
                )
                for feature in report["features"]:
                    if feature["js_distance"] is not None:
                        key = (mv.name, mv.version, feature["feature"])
                        shared.drift[key] = feature["js_distance"]

    async def _quality(self, shared: _Shared) -> None:
        from mlgate.audit.quality import model_quality

        audit = self.state.audit
        if audit is None or audit.log is None:
            return
        await audit.log.flush()
        for entry in self.state.registry.models():
            default = entry.default_version()
            if default is None or default not in entry.versions:
                continue
            task = entry.versions[default].manifest.task
            report = await model_quality(
                audit.engine, audit.catalog, entry.name, task=task, version=None, since_key=None
            )
            for row in report["versions"]:
                if row["shadow"]:
                    continue
                key = (entry.name, row["version"])
                shared.feedback[key] = int(row.get("labelled") or 0)
                if row.get("accuracy") is not None:
                    shared.accuracy[key] = float(row["accuracy"])

    # -- exposition ------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        load = GaugeMetricFamily(
            "mlgate_model_load_seconds",
            "How long each serving model version took to load and warm up.",
            labels=["model", "version"],
        )
        for entry in self.state.registry.models():
            for mv in entry.versions.values():
                load.add_metric([mv.name, mv.version], mv.load_seconds)
        yield load
        shared = self._shared
        drift = GaugeMetricFamily(
            "mlgate_drift_score",
            "Jensen-Shannon distance of a feature's live distribution from its training "
            "reference over the default drift window (0 same, 1 disjoint).",
            labels=["model", "version", "feature"],
        )
        for (model, version, feature), value in sorted(shared.drift.items()):
            drift.add_metric([model, version, feature], value)
        yield drift
        feedback = CounterMetricFamily(
            "mlgate_feedback",
            "Recorded predictions that received ground-truth feedback.",
            labels=["model", "version"],
        )
        for (model, version), count in sorted(shared.feedback.items()):
            feedback.add_metric([model, version], count)
        yield feedback
        accuracy = GaugeMetricFamily(
            "mlgate_live_accuracy",
            "Accuracy of a model version on the predictions that received feedback.",
            labels=["model", "version"],
        )
        for (model, version), value in sorted(shared.accuracy.items()):
            accuracy.add_metric([model, version], value)
        yield accuracy
