"""The drift observer: every answered request's rows, binned on the reference bins of
its model version, added to per-window histograms in the database.

``observe`` only appends the event's input matrix and output to a list (bounded by
``max_pending_rows``; beyond it rows are dropped and counted). A background task bins
what arrived (in a thread: a large batch must not hold the event loop) and merges it
into per-(model, version, window) counts: as soon as ``bin_rows`` rows are pending, and
at every flush. Every ``flush_interval_s`` it adds the counts to the database. Binning
early keeps the held inputs small: under batch traffic (1,000-row requests at a few
hundred a second) waiting for the flush held up to ``max_pending_rows`` input rows -
123 MB for 77 float64 features - and dropped the rows beyond them.

When the database is down the merged counts stay in memory (they do not grow with
traffic, only with windows) and are added at the next successful flush; the last flush
runs at shutdown.

Per-device requests (``device_id``) count only their verdicts: their readings are
relative to each device's own baseline, not comparable with the training reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np

from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput, InferenceEvent, Output
from mlgate.drift.reference import PREDICTIONS, ReferenceBins, prediction_labels, reference_bins
from mlgate.drift.settings import DriftSettings
from mlgate.drift.store import CountRow, DriftStore
from mlgate.registry.registry import ModelRegistry, ModelVersion

log = logging.getLogger("mlgate.drift")

_Key = tuple[str, str, int]  # model, version, window start


@dataclass
class _Histogram:
    features: tuple[str, ...] = ()
    counts: np.ndarray | None = None
    """(features, bins)"""
    predicted: np.ndarray | None = None
    """(labels,)"""

    def add(self, bins: ReferenceBins | None, x: np.ndarray | None, labels: np.ndarray) -> None:
        if bins is not None and x is not None and len(x):
            counts = bins.counts(x)
            if self.counts is None or self.counts.shape != counts.shape:
                self.features, self.counts = bins.features, counts
            else:
                self.counts += counts
        if self.predicted is None or len(self.predicted) != len(labels):
            self.predicted = labels.copy()
        else:
            self.predicted += labels


@dataclass
class _Pending:
    items: list[tuple[_Key, np.ndarray | None, Output]] = field(default_factory=list)
    rows: int = 0


def predicted_labels(output: Output, n_labels: int) -> np.ndarray:
    """Counts per prediction label (class index; anomaly: 0 normal, 1 anomaly)."""
    if isinstance(output, ClassificationOutput):
        return np.bincount(output.predicted, minlength=n_labels)
    assert isinstance(output, AnomalyOutput)
    verdicts = output.is_anomaly if output.scored is None else output.is_anomaly[output.scored]
    return np.bincount(np.asarray(verdicts, dtype=np.intp), minlength=2)


class DriftObserver:
    """Collects rows on the request path; bins and stores them in the background."""

    def __init__(
        self,
        registry: ModelRegistry,
        store: DriftStore,
        settings: DriftSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.bucket_s = settings.bucket_s
        self.max_pending_rows = settings.max_pending_rows
        self._clock = clock
        self._pending = _Pending()
        self._merged: dict[_Key, _Histogram] = {}
        self._bins: dict[ModelVersion, ReferenceBins | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        """Set when ``bin_rows`` rows are pending: the task bins them before the flush."""
        self._lock = asyncio.Lock()
        self._last_prune = 0.0
        self.counts = {"rows": 0, "dropped": 0, "flushes": 0, "flush_errors": 0, "binnings": 0}

    # -- the request path ---------------------------------------------------------------

    def observe(self, event: InferenceEvent) -> None:
        pending = self._pending
        if pending.rows + event.rows > self.max_pending_rows:
            self.counts["dropped"] += event.rows
            return
        window = int(event.timestamp // self.bucket_s) * self.bucket_s
        matrix = None if event.device_id is not None else event.inputs.matrix
        pending.items.append(((event.model, event.version, window), matrix, event.output))
        pending.rows += event.rows
        if pending.rows >= self.settings.bin_rows:
            self._wake.set()

    # -- background -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="drift-flush")

    async def close(self) -> None:
        """Stop the background task and flush what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.flush_interval_s
        next_flush = loop.time() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_flush - loop.time()))
            self._wake.clear()
            try:
                if loop.time() < next_flush:
                    await self.bin_pending()
                    continue
                next_flush = loop.time() + interval
                await self.flush()
                await self._prune()
            except Exception:
                log.exception("drift flush failed; retrying")

    async def bin_pending(self) -> None:
        """Bin the rows that arrived into the in-memory counts (nothing stored)."""
        async with self._lock:
            await self._bin_pending()

    async def _bin_pending(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if pending.items:
            work = self._prepare(pending)
            await anyio.to_thread.run_sync(self._bin, work)
            self.counts["rows"] += pending.rows
            self.counts["binnings"] += 1

    async def flush(self) -> bool:
        """Bin what arrived and add every pending count to the database; False when the
        database refused (the counts stay pending)."""
        async with self._lock:
            await self._bin_pending()
            if not self._merged:
                return True
            rows = self._rows()
            try:
                await self.store.add(rows)
            except Exception:
                self.counts["flush_errors"] += 1
                log.warning(
                    "drift histograms not stored; kept for the next flush",
                    exc_info=True,
                    extra={"windows": len(self._merged)},
                )
                return False
            self._merged.clear()
            self.counts["flushes"] += 1
            return True

    def _prepare(
        self, pending: _Pending
    ) -> list[tuple[_Key, ReferenceBins | None, int, list[np.ndarray], list[Output]]]:
        """Group by (model, version, window) and find each version's bins (in the loop:
        the registry snapshot is read here, not in the thread)."""
        groups: dict[_Key, tuple[list[np.ndarray], list[Output]]] = {}
        for key, matrix, output in pending.items:
            matrices, outputs = groups.setdefault(key, ([], []))
            if matrix is not None:
                matrices.append(matrix)
            outputs.append(output)
        work = []
        for key, (matrices, outputs) in groups.items():
            mv = self._version(key[0], key[1])
            if mv is None:
                self.counts["dropped"] += sum(o.rows for o in outputs)
                continue
            bins = self._bins_of(mv)
            labels = len(prediction_labels(mv.manifest))
            work.append((key, bins, labels, matrices, outputs))
        return work

    def _bin(
        self, work: list[tuple[_Key, ReferenceBins | None, int, list[np.ndarray], list[Output]]]
    ) -> None:
        for key, bins, n_labels, matrices, outputs in work:
            x = np.concatenate(matrices) if matrices else None
            labels = sum(
                (predicted_labels(o, n_labels) for o in outputs), start=np.zeros(n_labels, int)
            )
            self._merged.setdefault(key, _Histogram()).add(bins, x, labels)

    def _rows(self) -> list[CountRow]:
        rows = []
        for (model, version, window), hist in self._merged.items():
            if hist.counts is not None:
                for f, b in zip(*np.nonzero(hist.counts), strict=True):
                    rows.append(
                        CountRow(
                            model, version, window, hist.features[f], int(b), int(hist.counts[f, b])
                        )
                    )
            if hist.predicted is not None:
                for b in np.nonzero(hist.predicted)[0]:
                    rows.append(
                        CountRow(
                            model, version, window, PREDICTIONS, int(b), int(hist.predicted[b])
                        )
                    )
        return rows

    def _version(self, model: str, version: str) -> ModelVersion | None:
        try:
            entry = self.registry.entry(model)
        except Exception:
            return None
        return entry.versions.get(version)

    def _bins_of(self, mv: ModelVersion) -> ReferenceBins | None:
        if mv not in self._bins:
            if len(self._bins) > 256:  # versions come and go: keep the map small
                self._bins.clear()
            self._bins[mv] = reference_bins(mv.manifest)
        return self._bins[mv]

    async def _prune(self) -> None:
        now = self._clock()
        if now - self._last_prune < 3600:
            return
        self._last_prune = now
        before = int(now - self.settings.retention_days * 86400)
        deleted = await self.store.prune(before)
        if deleted:
            log.info("old drift windows deleted", extra={"rows": deleted})

    def stats(self) -> dict[str, Any]:
        return {
            **self.counts,
            "pending_rows": self._pending.rows,
            "unsaved_windows": len(self._merged),
        }
