"""One sink's bounded queue and its delivery task: batches, retries with exponential
backoff, counted drops.

Detections wait as (event, rows) chunks; at most ``max_queue`` detections wait, and a
chunk that does not fit is cut (what does not fit is dropped and counted). The task
takes up to ``batch_size`` detections, builds their documents once, and delivers them
until the sink accepts them: after a failure it waits ``initial``, then twice as long
each time up to ``maximum`` (with jitter, so workers do not retry in step), sending the
same body under the same delivery id. A sink that refuses the batch for good
(:class:`~mlgate.sinks.targets.DeliveryRefused`) has it dropped and counted as
``refused``. Nothing here runs on the request path: a slow or dead receiver only makes
the queue grow up to its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.dataplane.types import InferenceEvent
from mlgate.registry.manifest import Manifest
from mlgate.sinks.documents import detection_documents
from mlgate.sinks.targets import DeliveryRefused, Sink, new_delivery_id

log = logging.getLogger("mlgate.sinks")


@dataclass(slots=True)
class _Chunk:
    event: InferenceEvent
    rows: np.ndarray
    manifest: Manifest


class DeliveryQueue:
    """Holds one sink's detections and delivers them in the background."""

    def __init__(
        self,
        sink: Sink,
        *,
        max_queue: int,
        batch_size: int,
        retry_initial_s: float,
        retry_max_s: float,
    ) -> None:
        self.sink = sink
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._chunks: deque[_Chunk] = deque()
        self._waiting = 0
        self._in_flight = 0
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.counts = {
            "queued": 0,
            "delivered": 0,
            "dropped": 0,
            "refused": 0,
            "failed_attempts": 0,
        }

    # -- the request path (through the dispatcher) ---------------------------------------

    def offer(self, event: InferenceEvent, rows: np.ndarray, manifest: Manifest) -> None:
        """Queue ``rows`` of ``event`` (as many as fit)."""
        space = self.max_queue - self._waiting
        if space < len(rows):
            self.counts["dropped"] += len(rows) - max(space, 0)
            rows = rows[: max(space, 0)]
        if not len(rows):
            return
        self._chunks.append(_Chunk(event, rows, manifest))
        self._waiting += len(rows)
        self.counts["queued"] += len(rows)
        if self._ready is not None:
            self._ready.set()

    # -- background -----------------------------------------------------------------------

    def start(self) -> None:
        self._ready = asyncio.Event()
        if self._chunks:
            self._ready.set()
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.sink.name}")

    @property
    def waiting(self) -> int:
        """Detections queued or being delivered."""
        return self._waiting + self._in_flight

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued was delivered (or dropped); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.waiting:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self, timeout_s: float) -> None:
        """Deliver what is queued for up to ``timeout_s``, then stop; what is left is
        dropped and counted."""
        if self._task is not None:
            if timeout_s > 0:
                await self.drain(timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = self.waiting
        if left:
            self.counts["dropped"] += left
            log.warning(
                "detections not delivered at shutdown",
                extra={"sink": self.sink.name, "detections": left},
            )
        self._chunks.clear()
        self._waiting = self._in_flight = 0
        await self.sink.close()

    def _take(self) -> list[dict[str, Any]]:
        """Up to ``batch_size`` detections off the queue, as documents."""
        documents: list[dict[str, Any]] = []
        while self._chunks and len(documents) < self.batch_size:
            chunk = self._chunks[0]
            room = self.batch_size - len(documents)
            taken, rest = chunk.rows[:room], chunk.rows[room:]
            if len(rest):
                chunk.rows = rest
            else:
                self._chunks.popleft()
            self._waiting -= len(taken)
            self._in_flight += len(taken)
            documents.extend(detection_documents(chunk.event, taken, chunk.manifest))
        return documents

    async def _run(self) -> None:
        assert self._ready is not None
        while True:
            if not self._chunks:
                self._ready.clear()
                await self._ready.wait()
                continue
            try:
                documents = self._take()
            except Exception:
                log.exception(
                    "detection documents could not be built", extra={"sink": self.sink.name}
                )
                self.counts["dropped"] += self._in_flight
                self._in_flight = 0
                continue
            await self._deliver(documents)
            self._in_flight = 0

    async def _deliver(self, documents: list[dict[str, Any]]) -> None:
        delivery_id = new_delivery_id()
        failures = 0
        while True:
            try:
                await self.sink.deliver(documents, delivery_id)
            except DeliveryRefused as exc:
                self.counts["refused"] += len(documents)
                log.error(
                    "detections refused by the sink; dropped",
                    extra={"sink": self.sink.name, "detections": len(documents), "error": str(exc)},
                )
                return
            except Exception as exc:
                failures += 1
                self.counts["failed_attempts"] += 1
                delay = min(self.retry_max_s, self.retry_initial_s * 2 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)
                if failures == 1:
                    log.warning(
                        "detection delivery failed; retrying with backoff",
                        extra={"sink": self.sink.name, "error": repr(exc)},
                    )
                await asyncio.sleep(delay)
                continue
            self.counts["delivered"] += len(documents)
            if failures:
                log.info(
                    "detection delivery recovered",
                    extra={"sink": self.sink.name, "attempts": failures + 1},
                )
            return

    def stats(self) -> dict[str, Any]:
        return {"sink": self.sink.name, "waiting": self.waiting, **self.counts}
