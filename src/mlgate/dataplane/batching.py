"""Adaptive batching: concurrent requests for one model version share one model call.

Requests queue their rows; one task per version takes what is queued - as soon as the
model is free, after waiting at most ``max_delay_s`` from the first queued request for
more to arrive, up to ``max_batch_size`` rows - runs the model once, and gives each
caller its own rows back. A failed batch is retried request by request, so an error in
one request's rows reaches only that caller. A caller that gives up (a timeout, a
client that went away) before its batch runs leaves nothing behind: its rows are
skipped. ``close()`` stops taking requests and finishes those already queued (reload,
unload, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("mlgate.batching")

#: Runs the model on a matrix (already in the right dtype); may run in a thread.
ModelCall = Callable[[np.ndarray], Awaitable[np.ndarray]]
#: Told of every model call: its rows, and how long each of its requests waited (s).
BatchObserver = Callable[[int, list[float]], None]


class BatcherClosed(RuntimeError):
    """The batcher no longer takes requests (its version is being unloaded)."""


@dataclass(eq=False)
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    queued_at: float
    dispatched_at: float = 0.0
    done: bool = field(default=False)


class AdaptiveBatcher:
    """Groups concurrent requests' rows into model calls (see the module docstring)."""

    def __init__(
        self,
        call: ModelCall,
        *,
        max_batch_size: int,
        max_delay_s: float,
        observer: BatchObserver | None = None,
        tracer: Tracer | None = None,
        span_attributes: dict[str, Any] | None = None,
    ) -> None:
        """``observer`` hears of every model call; with a ``tracer``, each request's wait
        in the queue becomes a span (``span_attributes`` on it)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._call = call
        self.max_batch_size = max_batch_size
        self.max_delay_s = max(0.0, max_delay_s)
        self._queue: deque[_Pending] = deque()
        self._rows = 0  # rows of the requests in _queue
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._observer = observer
        self._tracer = tracer
        self._span_attributes = span_attributes or {}
        self.batches = 0
        """Model calls made (for tests and metrics)."""

    @property
    def queued_rows(self) -> int:
        return self._rows

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for ``rows``, computed together with other callers'."""
        if self._closed:
            raise BatcherClosed
        loop = asyncio.get_running_loop()
        if self._task is None:
            # Created lazily, inside the loop that serves the requests.
            self._arrived = asyncio.Event()
            self._full = asyncio.Event()
            self._task = loop.create_task(self._serve(), name="mlgate-batcher")
        pending = _Pending(rows, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._rows += len(rows)
        assert self._arrived is not None and self._full is not None
        self._arrived.set()
        if self._rows >= self.max_batch_size:
            self._full.set()
        try:
            result = await pending.future
        finally:
            # Cancelled (timeout, disconnect) before its batch ran: skipped by _take().
            pending.done = True
        if self._tracer is not None:
            self._trace_wait(pending, loop)
        return result

    def _trace_wait(self, pending: _Pending, loop: asyncio.AbstractEventLoop) -> None:
        """A span for the time ``pending`` waited in the queue (loop times as epoch ns)."""
        assert self._tracer is not None
        now_ns, now = time.time_ns(), loop.time()
        span = self._tracer.start_span(
            "mlgate.batch.queue_wait",
            start_time=now_ns - int((now - pending.queued_at) * 1e9),
            attributes={**self._span_attributes, "mlgate.rows": len(pending.rows)},
        )
        span.end(end_time=now_ns - int((now - pending.dispatched_at) * 1e9))

    async def _serve(self) -> None:
        assert self._arrived is not None
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather()
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _gather(self) -> None:
        """Wait (at most max_delay_s from now) for the batch to fill: one wait per batch,
        woken by the request that fills it (or by close()), not by every arrival."""
        assert self._full is not None
        if self.max_delay_s <= 0 or self._closed or self._rows >= self.max_batch_size:
            return
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.max_delay_s):
                await self._full.wait()

    def _take(self) -> list[_Pending]:
        """Queued requests up to max_batch_size rows (at least one), skipping those whose
        callers have gone."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.done or head.future.done():
                self._queue.popleft()
                self._rows -= len(head.rows)
                continue
            if batch and rows + len(head.rows) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            self._rows -= len(head.rows)
            rows += len(head.rows)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        self.batches += 1
        if self._observer is not None or self._tracer is not None:
            now = asyncio.get_running_loop().time()
            for p in batch:
                p.dispatched_at = now
            if self._observer is not None:
                self._observer(sum(len(p.rows) for p in batch), [now - p.queued_at for p in batch])
        if len(batch) == 1:
            await self._answer(batch[0])
            return
        sizes = [len(p.rows) for p in batch]
        try:
            out = await self._call(np.concatenate([p.rows for p in batch]))
        except Exception:
            # Find out whose rows fail: each caller gets its own answer or error.
            for pending in batch:
                await self._answer(pending)
            return
        offsets = np.cumsum(sizes)[:-1]
        for pending, part in zip(batch, np.split(out, offsets), strict=True):
            if not pending.future.done():
                pending.future.set_result(part)

    async def _answer(self, pending: _Pending) -> None:
        try:
            out = await self._call(pending.rows)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(out)

    async def close(self) -> None:
        """Take no more requests; answer those queued, then stop."""
        self._closed = True
        if self._task is None:
            return
        assert self._arrived is not None and self._full is not None
        self._arrived.set()
        self._full.set()  # a batch gathering runs now
        try:
            await self._task
        except Exception:
            log.exception("batcher failed while draining")
