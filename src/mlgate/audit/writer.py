"""The audit log's buffered writer: an observer of the data plane that never does I/O on
the request path.

``observe()`` appends the event (one request, many rows) to a bounded in-memory queue
and bumps two integers; nothing else. A background task (:meth:`AuditLog.run`) turns
queued events into rows - hashing, class names, JSON - and writes them in batches
through an :class:`~mlgate.audit.sink.AuditSink`.

When the database is down or slow, requests are answered as usual: rows stay queued
and the batch that failed is retried with exponential backoff until it is written
(``depth`` counts every accepted row not yet written, the retried batch included). Only
the bound (``queue_max_records``) is ever hit. By default (``when_full: drop``) a
request whose rows do not fit is not recorded at all: ``overflow`` counts those rows
exactly and a warning is logged (at once, then at most every ``LOG_EVERY_S``). With
``when_full: wait`` the data plane first awaits :meth:`AuditLog.admit`, which returns
once the rows fit (a request larger than the whole queue: once the queue is empty) or
raises :class:`~mlgate.errors.AuditBehind` after ``full_wait_s``; nothing awaits
between that and ``observe()``, so the room it saw is still there.

Nothing accepted into the queue is dropped when the database comes back; a graceful
shutdown writes what is left (within ``shutdown_timeout_s``).

``observe()`` must be called on the event loop's thread (the data plane does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlgate.audit.records import Row, batch_rows, event_rows
from mlgate.audit.settings import AuditSettings
from mlgate.audit.sink import AuditSink, InvalidRows
from mlgate.dataplane.types import InferenceEvent
from mlgate.errors import AuditBehind
from mlgate.observability.tracing import step

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("mlgate.audit")

#: A failing database or a full queue is logged at once, then at most this often.
LOG_EVERY_S = 10.0

#: (model, version) -> class names, for turning class indices into names.
ClassNames = Callable[[str, str], tuple[str, ...] | None]


@dataclass(frozen=True)
class AuditStats:
    """Counters of one worker's audit log, since it started."""

    depth: int
    """Rows accepted and not written yet (queued or in the batch being written)."""
    overflow: int
    """Rows not recorded because the queue was full."""
    written: int
    rejected: int
    """Rows the database refused as invalid (a bug; each is logged)."""
    failures: int
    """Failed write attempts (each retried)."""


class AuditLog:
    """Observer + bounded queue + batch writer."""

    def __init__(self, settings: AuditSettings, sink: AuditSink, class_names: ClassNames) -> None:
        self.settings = settings
        self.sink = sink
        self.class_names = class_names
        self._queue: deque[InferenceEvent] = deque()
        self._max = settings.queue_max_records
        self._wait = settings.when_full == "wait"
        self._batch = settings.batch_records
        self.queued = 0
        """Rows in the queue (not taken by a batch yet)."""
        self._pending: list[Row] = []
        """The batch being written (kept until the database takes it)."""
        self.overflow = 0
        self.written = 0
        self.rejected = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._room = asyncio.Condition()
        """Notified whenever written rows leave the queue (``admit`` waits on it)."""
        self.waiting = 0
        """Requests waiting in ``admit`` for room in the queue."""
        self._last_overflow_log = -LOG_EVERY_S
        self._last_failure_log = -LOG_EVERY_S
        self._overflow_logged = 0
        self._failing_since: float | None = None
        self.on_flush: Callable[[float], None] | None = None
        """Told how long each written batch took (s): the metrics' hook."""
        self.tracer: Tracer | None = None
        """Opens a span per written batch (None: tracing off)."""

    # -- hot path ------------------------------------------------------------------------

    def fits(self, rows: int) -> bool:
        """Whether a request of ``rows`` rows can be queued now. Under ``when_full:
        wait`` one larger than the whole queue fits when the queue is empty (else it
        could never be answered)."""
        depth = self.queued + len(self._pending)
        return depth + rows <= self._max or (depth == 0 and self._wait)

    async def admit(self, rows: int) -> None:
        """Return once a request of ``rows`` rows fits in the queue; AuditBehind (503)
        after ``full_wait_s``. The caller queues it before awaiting anything else."""
        if self.fits(rows):
            return
        self.waiting += 1
        self._wake.set()  # the writer is busy or about to be: make sure it runs
        try:
            async with asyncio.timeout(self.settings.full_wait_s), self._room:
                await self._room.wait_for(lambda: self.fits(rows))
        except TimeoutError:
            raise AuditBehind(
                f"the audit log has {self.depth} rows waiting to be written and every "
                "answer must be recorded: retry shortly",
                details={"audit_depth": self.depth, "rows": rows},
                headers={"Retry-After": "1"},
            ) from None
        finally:
            self.waiting -= 1

    def observe(self, event: InferenceEvent) -> None:
        """Queue one answered request (a few hundred nanoseconds; no per-row work)."""
        rows = event.rows
        if not self.fits(rows):
            self._overflowed(rows)
            return
        self._queue.append(event)
        self.queued += rows
        if self.queued >= self._batch:
            self._wake.set()

    def _overflowed(self, rows: int) -> None:
        self.overflow += rows
        now = time.monotonic()
        if now - self._last_overflow_log >= LOG_EVERY_S:
            log.warning(
                "audit queue full: requests are not being recorded",
                extra={
                    "audit_depth": self.depth,
                    "audit_overflow": self.overflow,
                    "audit_overflow_since_last_log": self.overflow - self._overflow_logged,
                },
            )
            self._last_overflow_log = now
            self._overflow_logged = self.overflow

    # -- counters ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self.queued + len(self._pending)

    @property
    def status(self) -> str:
        """``ok``, or ``retrying`` while the database refuses writes (rows queued)."""
        return "retrying" if self._failing_since is not None else "ok"

    def stats(self) -> AuditStats:
        return AuditStats(self.depth, self.overflow, self.written, self.rejected, self.failures)

    # -- background ----------------------------------------------------------------------

    async def run(self) -> None:
        """Write queued rows every ``flush_interval_s`` (sooner when a batch is full);
        retry with exponential backoff while the database refuses them."""
        wake = self._wake
        settings = self.settings
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), settings.flush_interval_s)
            wake.clear()
            if await self.flush():
                backoff = 0.0
            else:
                backoff = min(settings.retry_max_s, max(settings.retry_initial_s, backoff * 2))

    async def flush(self) -> bool:
        """Write what is queued now; False when the database refused (rows kept)."""
        async with self._lock:
            budget = self.queued + len(self._pending)
            while budget > 0 and (self._pending or self._queue):
                if not self._pending:
                    self._pending = self._take()
                batch = self._pending
                if not await self._write(batch):
                    return False
                self._pending = []
                budget -= len(batch)
                if self.waiting:
                    async with self._room:
                        self._room.notify_all()
        return True

    def _take(self) -> list[Row]:
        """Up to a batch of rows from the head of the queue (whole requests)."""
        events: list[InferenceEvent] = []
        rows = 0
        while self._queue and (not rows or rows + self._queue[0].rows <= self._batch):
            event = self._queue.popleft()
            self.queued -= event.rows
            rows += event.rows
            events.append(event)
        settings = self.settings
        try:
            return batch_rows(events, self.class_names, settings.stores_raw_inputs)
        except Exception:
            log.exception("audit records could not be built together; one by one")
        out: list[Row] = []
        for event in events:
            try:
                out += event_rows(
                    event,
                    self.class_names(event.model, event.version),
                    raw_inputs=settings.stores_raw_inputs(event.model),
                )
            except Exception:
                # A bug in turning one event into rows must not block the queue.
                self.rejected += event.rows
                log.exception("audit record could not be built", extra={"model": event.model})
        return out

    async def _write(self, rows: list[Row]) -> bool:
        """Write one batch; False (rows kept in ``_pending``) when the database failed."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.write_timeout_s):
                with step(self.tracer, "mlgate.audit.flush", rows=len(rows)):
                    await self.sink.write(rows)
        except InvalidRows:
            if not await self._write_valid(rows):
                return False
        except Exception as exc:
            self._failed(exc)
            return False
        else:
            self.written += len(rows)
        if self.on_flush is not None:
            self.on_flush(time.perf_counter() - started)
        if self._failing_since is not None:
            log.warning(
                "audit log writes again",
                extra={
                    "audit_outage_s": round(time.monotonic() - self._failing_since, 3),
                    "audit_depth": self.depth - len(rows),
                    "audit_overflow": self.overflow,
                },
            )
            self._failing_since = None
            self._last_failure_log = -LOG_EVERY_S
        return True

    async def _write_valid(self, rows: list[Row]) -> bool:
        """Write a batch the database refused as invalid, halving it until the bad rows
        are isolated (a bug: each is logged and counted; the others are written). On a
        database failure meanwhile, what is left stays pending."""
        parts: list[list[Row]] = [rows]
        while parts:
            part = parts.pop()
            try:
                async with asyncio.timeout(self.settings.write_timeout_s):
                    await self.sink.write(part)
            except InvalidRows:
                if len(part) > 1:
                    half = len(part) // 2
                    parts += [part[half:], part[:half]]
                    continue
                self.rejected += 1
                log.exception(
                    "audit record refused by the database",
                    extra={"prediction_id": f"{part[0][0]}-{part[0][1]}"},
                )
            except Exception as exc:
                parts.append(part)
                self._pending = [row for p in reversed(parts) for row in p]
                self._failed(exc)
                return False
            else:
                self.written += len(part)
        return True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log < LOG_EVERY_S:
            return
        self._last_failure_log = now
        log.warning(
            "audit log cannot write; rows stay queued and are retried",
            extra={
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "audit_depth": self.depth,
                "audit_overflow": self.overflow,
                "audit_failures": self.failures,
            },
        )

    async def close(self) -> None:
        """Write what is left, trying for ``shutdown_timeout_s``; log what could not be."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        delay = self.settings.retry_initial_s
        while self.depth:
            if await self.flush():
                continue
            if time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(self.settings.retry_max_s, delay * 2)
        if self.depth:
            log.error(
                "audit rows lost at shutdown: the database did not take them",
                extra={"audit_lost": self.depth, "audit_overflow": self.overflow},
            )
