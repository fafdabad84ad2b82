"""Running model versions: admission, batching, threads and timeouts.

Per model version:

- **admission**: at most ``max_queue`` requests wait for or run on the model; one more
  is shed at once with a 503 and ``Retry-After`` rather than left to time out;
- **execution**: a model whose single-row call measured faster than the inline
  threshold runs on the event loop for one row (a thread hop costs more than the call);
  anything else runs in a worker thread, so a slow model never stalls other requests;
  with batching on, concurrent requests share model calls (:mod:`.batching`);
- **timeout**: a prediction that takes longer than ``timeout_s`` is answered 504 (the
  model call in a thread cannot be interrupted; its result is dropped);
- **disconnects**: a request that has to wait (batched or threaded) is abandoned when
  its client goes away, so its rows do not stay queued.

Model failures become a 500 ``model_error`` without internals (the traceback goes to
the log). Batchers follow the registry: a version that stops serving has its batcher
drained (requests already queued are answered; later ones run unbatched).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from mlgate.dataplane.batching import AdaptiveBatcher, BatcherClosed, BatchObserver
from mlgate.errors import ClientGone, ModelExecutionError, Overloaded, PredictionTimeout
from mlgate.observability.tracing import MODEL, VERSION
from mlgate.registry.registry import ModelVersion

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("mlgate.inference")

#: Completes when the client of a request goes away (None: cannot tell).
DisconnectWatch = Callable[[], Awaitable[object]]
#: The batch observer of a model version, given (model, version); None: not observed.
BatchObservers = Callable[[str, str], BatchObserver]


@dataclass(frozen=True, slots=True)
class RunnerPolicy:
    """Server-wide defaults; a model's ``batching`` in its manifest or model.yaml wins."""

    batching: bool = False
    max_batch_size: int = 32
    max_delay_s: float = 0.002
    max_queue: int = 256
    timeout_s: float = 30.0
    inline_threshold_us: float = 150.0


def _call(mv: ModelVersion, x: np.ndarray) -> np.ndarray:
    return np.asarray(mv.runtime.run(x), dtype=np.float64)


class VersionRunner:
    """Admission, execution and timeout for one model version."""

    def __init__(
        self,
        mv: ModelVersion,
        policy: RunnerPolicy,
        observers: BatchObservers | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.mv = mv
        self.policy = policy
        self.in_flight = 0
        spec = mv.batching
        enabled = policy.batching if spec is None or spec.enabled is None else spec.enabled
        self.batcher: AdaptiveBatcher | None = None
        if enabled:
            self.batcher = AdaptiveBatcher(
                self._execute,
                max_batch_size=(spec.max_batch_size if spec and spec.max_batch_size else None)
                or policy.max_batch_size,
                max_delay_s=(
                    spec.max_delay_ms / 1000
                    if spec is not None and spec.max_delay_ms is not None
                    else policy.max_delay_s
                ),
                observer=observers(mv.name, mv.version) if observers is not None else None,
                tracer=tracer,
                span_attributes={MODEL: mv.name, VERSION: mv.version},
            )

    @property
    def inline(self) -> bool:
        """Whether a single row runs on the event loop: the load-time measure, or the
        runtime's own when it changed since (a scikit-learn model's ONNX twin)."""
        current = getattr(self.mv.runtime, "current_single_row_us", None)
        if current is None:
            return self.mv.inline
        return bool(current <= self.policy.inline_threshold_us)

    async def _execute(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 1 and self.inline:
            return _call(self.mv, x)
        return await anyio.to_thread.run_sync(_call, self.mv, x)

    @property
    def may_wait(self) -> bool:
        """Whether a request can wait here (batched or threaded) rather than run at once."""
        return self.batcher is not None or not self.inline

    async def run(self, x: np.ndarray, disconnected: DisconnectWatch | None = None) -> np.ndarray:
        """Raw output: (rows, classes) probabilities or (rows,) anomaly scores."""
        mv = self.mv
        if self.in_flight >= self.policy.max_queue:
            raise Overloaded(
                f"model {mv.name!r} version {mv.version!r} has {self.in_flight} requests "
                "waiting: retry shortly",
                details={"model": mv.name, "version": mv.version, "queued": self.in_flight},
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                if disconnected is not None and (self.may_wait or len(x) > 1):
                    raw = await _unless_gone(self._dispatch(x), disconnected)
                else:
                    raw = await self._dispatch(x)
        except TimeoutError:
            log.warning(
                "prediction timed out",
                extra={"model": mv.name, "version": mv.version, "timeout_s": self.policy.timeout_s},
            )
            raise PredictionTimeout(
                f"model {mv.name!r} version {mv.version!r} did not answer within "
                f"{self.policy.timeout_s:g} s",
                details={"timeout_s": self.policy.timeout_s},
            ) from None
        except (Overloaded, PredictionTimeout, ClientGone):
            raise
        except Exception:
            log.exception("model call failed", extra={"model": mv.name, "version": mv.version})
            raise ModelExecutionError(
                f"model {mv.name!r} version {mv.version!r} failed on this input"
            ) from None
        finally:
            self.in_flight -= 1
        if not np.all(np.isfinite(raw)):
            log.error("model returned non-finite output", extra={"model": mv.name})
            raise ModelExecutionError(
                f"model {mv.name!r} version {mv.version!r} produced no usable output"
            )
        return raw

    async def _dispatch(self, x: np.ndarray) -> np.ndarray:
        if self.batcher is not None:
            try:
                return await self.batcher.submit(x)
            except BatcherClosed:
                pass  # the version is being unloaded: this request still gets its answer
        return await self._execute(x)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()


async def _unless_gone(work: Awaitable[np.ndarray], disconnected: DisconnectWatch) -> np.ndarray:
    """The result of ``work``, or :class:`ClientGone` (and ``work`` cancelled) if the
    client goes away first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone("the client closed the connection before its answer was ready")
    return task.result()


class Runner:
    """The data plane's runner step: one :class:`VersionRunner` per model version,
    created on first use and drained when the registry unloads the version."""

    def __init__(
        self, policy: RunnerPolicy | None = None, batch_observers: BatchObservers | None = None
    ) -> None:
        self.policy = policy or RunnerPolicy()
        self.batch_observers = batch_observers
        self.tracer: Tracer | None = None
        """Given to batchers: queue waits become spans (None: tracing off)."""
        self._versions: dict[int, VersionRunner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def for_version(self, mv: ModelVersion) -> VersionRunner:
        runner = self._versions.get(id(mv))
        if runner is None or runner.mv is not mv:
            runner = self._versions[id(mv)] = VersionRunner(
                mv, self.policy, self.batch_observers, self.tracer
            )
        return runner

    def stats(self) -> list[dict[str, Any]]:
        """Per model version in use: requests in flight, its queue bound, batching."""
        out = []
        for runner in list(self._versions.values()):
            batcher = runner.batcher
            out.append(
                {
                    "model": runner.mv.name,
                    "version": runner.mv.version,
                    "in_flight": runner.in_flight,
                    "max_queue": runner.policy.max_queue,
                    "batching": batcher is not None,
                    "queued_rows": batcher.queued_rows if batcher is not None else 0,
                    "batches": batcher.batches if batcher is not None else 0,
                }
            )
        return sorted(out, key=lambda r: (r["model"], r["version"]))

    async def run(
        self, mv: ModelVersion, x: np.ndarray, disconnected: DisconnectWatch | None = None
    ) -> np.ndarray:
        """Raw output of ``mv`` for ``x`` (503 when shed, 504 on timeout, 500 on failure)."""
        return await self.for_version(mv).run(x, disconnected)

    # -- registry listener --------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the batchers (registry events may come from a thread)."""
        self._loop = loop

    def on_load(self, mv: ModelVersion) -> None:
        """Nothing to do: a version's runner is made when its first request arrives."""

    def on_unload(self, mv: ModelVersion) -> None:
        if self._loop is None or self._loop.is_closed():
            self._versions.pop(id(mv), None)
            return
        self._loop.call_soon_threadsafe(self._retire, mv)

    def _retire(self, mv: ModelVersion) -> None:
        runner = self._versions.get(id(mv))
        if runner is None or runner.mv is not mv:
            return
        del self._versions[id(mv)]
        task = asyncio.get_running_loop().create_task(runner.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Drain every batcher (shutdown)."""
        runners = list(self._versions.values())
        self._versions.clear()
        for runner in runners:
            await runner.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
