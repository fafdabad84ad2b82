"""Hooking the metrics onto the parts the composition root built."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

from mlgate.observability.metrics import Metrics
from mlgate.observability.multiprocess import forget_dead_workers, mark_dead
from mlgate.observability.observer import PredictionMetrics
from mlgate.observability.state import StateMetrics

if TYPE_CHECKING:
    from mlgate.api.state import AppState


class Instrumentation:
    """The metrics of one running app: hooks in place, state collector, sampler task."""

    def __init__(self, metrics: Metrics, state: AppState) -> None:
        self.metrics = metrics
        settings = state.settings.metrics
        state.registry.add_listener(metrics)  # load failures
        state.dataplane.add_observer(PredictionMetrics(metrics, state.registry))
        state.dataplane.runner.batch_observers = metrics.batch_observer
        state.signals.cache.on_lookup = metrics.cache_lookup
        if state.audit is not None and state.audit.log is not None:
            state.audit.log.on_flush = metrics.audit_flushed
        self.state_metrics = StateMetrics(metrics, state, settings.refresh_interval_s)
        metrics.add_collector(self.state_metrics)
        self._sample_interval_s = settings.sample_interval_s
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        """With several workers, each publishes its own state regularly."""
        if self.metrics.multiprocess:
            self._sampler = asyncio.create_task(
                self.state_metrics.run_sampler(self._sample_interval_s), name="mlgate-metrics"
            )

    async def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition: this worker sampled, database gauges fresh, dead workers'
        live gauges forgotten."""
        await self.state_metrics.refresh()  # flushes the audit queue first, then:
        self.state_metrics.sample()
        if self.metrics.multiprocess:
            forget_dead_workers(self.metrics.multiprocess)
        return self.metrics.render(accept)

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self.metrics.registry.unregister(self.state_metrics)
        if self.metrics.multiprocess:
            mark_dead(os.getpid(), self.metrics.multiprocess)
