"""Shadow (challenger) versions: every request to a model is scored again by the version
its ``shadow`` alias names, off the request path, and the answer is only recorded.

The data plane hands each answered request to :meth:`ShadowScorer.submit` (a deque
append when the model has a shadow, nothing otherwise). Background workers score the
queued requests with the shadow version in a thread pool of their own (``concurrency``
threads, so a hung challenger holds at most those and never the threads that serve
requests), and emit the answer as an :class:`~mlgate.dataplane.types.InferenceEvent` with
``shadow=True`` and the *same* ``prediction_key`` as the served answer, so the audit log
keeps it beside the served row. The client never sees it; a slow, failing or
overloaded shadow costs the request nothing: a full queue drops and counts, a failure
or timeout is logged and counted.

The shadow reads the served version's finalized input: its features are taken by name
(so a challenger may order or alias them differently); a challenger that needs a
feature the served version does not have is skipped and counted as ``incompatible``.
Requests that named a device (stateful baselines) and requests to the shadow version
itself are not shadowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlgate.auth.principal import Principal
from mlgate.dataplane.service import model_output
from mlgate.dataplane.types import InferenceContext, InferenceEvent, InferenceResult
from mlgate.errors import MlgateError
from mlgate.registry.registry import ModelRegistry, ModelVersion
from mlgate.shadow.settings import ShadowSettings

log = logging.getLogger("mlgate.shadow")


@dataclass(frozen=True, slots=True)
class _Job:
    result: InferenceResult
    target: str
    principal: Principal | None
    protocol: str


def _call(mv: ModelVersion, x: np.ndarray) -> np.ndarray:
    return np.asarray(mv.runtime.run(x), dtype=np.float64)


class ShadowScorer:
    """The bounded queue of requests to score again, and the workers that do it."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: ShadowSettings,
        notify: Callable[[InferenceEvent], None],
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.alias = settings.alias
        self.max_queue = settings.max_queue
        self._notify = notify
        self._queue: deque[_Job] = deque()
        self._ready: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._columns: dict[tuple[ModelVersion, ModelVersion], np.ndarray | None] = {}
        self.counts = {
            "queued": 0,
            "dropped": 0,
            "scored": 0,
            "failed": 0,
            "timed_out": 0,
            "incompatible": 0,
            "unavailable": 0,
        }

    # -- the request path ---------------------------------------------------------------

    def submit(self, result: InferenceResult, context: InferenceContext) -> None:
        """Queue ``result``'s request for the model's shadow version, if it has one."""
        mv = result.model
        try:
            target = self.registry.entry(mv.name).aliases.get(self.alias)
        except MlgateError:
            return
        if target is None or target == mv.version or self._ready is None:
            return
        if len(self._queue) >= self.max_queue:
            self.counts["dropped"] += 1
            return
        self._queue.append(_Job(result, target, context.principal, context.protocol))
        self.counts["queued"] += 1
        self._ready.set()

    # -- background -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (in the running loop)."""
        self._ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix="mlgate-shadow"
        )
        self._tasks = [
            asyncio.create_task(self._work(), name=f"shadow-{i}")
            for i in range(self.settings.concurrency)
        ]

    async def close(self) -> None:
        """Stop the workers; requests still queued are not scored (counted as dropped)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.counts["dropped"] += len(self._queue)
        self._queue.clear()
        self._ready = None

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued request has been scored (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue or self._busy:
            if time.monotonic() > deadline:
                raise TimeoutError(f"shadow queue not drained: {len(self._queue)} waiting")
            await asyncio.sleep(0.005)

    async def _work(self) -> None:
        assert self._ready is not None
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            job = self._queue.popleft()
            self._busy += 1
            try:
                await self._score(job)
            except Exception:
                self.counts["failed"] += 1
                log.exception(
                    "shadow scoring failed",
                    extra={"model": job.result.model.name, "shadow_version": job.target},
                )
            finally:
                self._busy -= 1

    async def _score(self, job: _Job) -> None:
        served = job.result.model
        try:
            shadow = self.registry.resolve(served.name, job.target)
        except Exception:
            self.counts["unavailable"] += 1
            return
        x = self._input_for(served, shadow, job.result.inputs.matrix)
        if x is None:
            self.counts["incompatible"] += 1
            return
        started = time.perf_counter()
        try:
            # A call still running at the timeout keeps its thread until it returns; a
            # call still queued behind it is cancelled.
            call = asyncio.get_running_loop().run_in_executor(self._executor, _call, shadow, x)
            raw = await asyncio.wait_for(call, self.settings.timeout_s)
        except TimeoutError:
            self.counts["timed_out"] += 1
            log.warning(
                "shadow version timed out",
                extra={"model": shadow.name, "version": shadow.version},
            )
            return
        if not np.all(np.isfinite(raw)):
            raise ValueError("the shadow version returned non-finite output")
        output = model_output(shadow, raw, x)
        result = job.result
        self._notify(
            InferenceEvent(
                request_id=result.request_id,
                principal=job.principal,
                protocol=job.protocol,
                model=shadow.name,
                version=shadow.version,
                task=shadow.manifest.task,
                rows=len(x),
                latency_ms=(time.perf_counter() - started) * 1000,
                timestamp=time.time(),
                inputs=replace(result.inputs, matrix=x),
                output=output,
                prediction_key=result.prediction_key,
                shadow=True,
            )
        )
        self.counts["scored"] += 1

    def _input_for(
        self, served: ModelVersion, shadow: ModelVersion, x: np.ndarray
    ) -> np.ndarray | None:
        """The served input as the shadow's matrix (features by name, its dtype)."""
        pair = (served, shadow)
        if pair not in self._columns:
            self._columns[pair] = _columns(served, shadow)
            if len(self._columns) > 64:  # versions come and go: keep the map small
                self._columns.pop(next(iter(self._columns)))
        columns = self._columns[pair]
        if columns is None:
            return None
        if len(columns) != x.shape[1] or np.any(columns != np.arange(x.shape[1])):
            x = x[:, columns]
        return np.ascontiguousarray(x, dtype=shadow.runtime.input_dtype)

    def stats(self) -> dict[str, Any]:
        return {"alias": self.alias, "waiting": len(self._queue), **self.counts}


def _columns(served: ModelVersion, shadow: ModelVersion) -> np.ndarray | None:
    """For each shadow feature, its column in the served input (None: one is missing)."""
    columns = []
    for feature in shadow.manifest.features:
        index = served.feature_index.get(feature.name)
        for alias in feature.aliases:
            if index is not None:
                break
            index = served.feature_index.get(alias)
        if index is None:
            return None
        columns.append(index)
    return np.asarray(columns, dtype=np.intp)
