"""Running a model version on a matrix without stalling the event loop.

A model whose single-row call measured faster than the inline threshold at load runs
on the event loop for one row (a thread hop costs more than the call); anything else
runs in a worker thread. Model failures become a 500 ``model_error`` without internals
(the traceback goes to the log).
"""

from __future__ import annotations

import logging

import anyio.to_thread
import numpy as np

from mlgate.errors import ModelExecutionError
from mlgate.registry.registry import ModelVersion

log = logging.getLogger("mlgate.inference")


def _call(mv: ModelVersion, x: np.ndarray) -> np.ndarray:
    return np.asarray(mv.runtime.run(x), dtype=np.float64)


class Runner:
    """Calls a model version's runtime: inline when cheap, in a thread otherwise."""

    async def run(self, mv: ModelVersion, x: np.ndarray) -> np.ndarray:
        """Raw output: (rows, classes) probabilities or (rows,) anomaly scores."""
        try:
            if mv.inline and len(x) == 1:
                raw = _call(mv, x)
            else:
                raw = await anyio.to_thread.run_sync(_call, mv, x)
        except Exception:
            log.exception("model call failed", extra={"model": mv.name, "version": mv.version})
            raise ModelExecutionError(
                f"model {mv.name!r} version {mv.version!r} failed on this input"
            ) from None
        if not np.all(np.isfinite(raw)):
            log.error("model returned non-finite output", extra={"model": mv.name})
            raise ModelExecutionError(
                f"model {mv.name!r} version {mv.version!r} produced no usable output"
            )
        return raw
