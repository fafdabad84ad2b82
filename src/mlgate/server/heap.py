"""The garbage collector after the models load: keep them out of full collections.

CPython's full (generation 2) collection walks every tracked object. A worker holding
the bundled models, ONNX sessions, scikit-learn estimators and pydantic schemas tracks
millions of them, and each full collection stopped the event loop for 175-240 ms in the
benchmark (W1, measured with ``gc.callbacks``): every request waiting in that moment
was delayed by as much, which is most of W1's p99. :func:`settle` runs one collection
(the loading's own garbage goes) and then moves every object still alive into the
permanent generation (:func:`gc.freeze`), which later collections skip; the models are
kept for the life of the worker anyway. Objects made while serving are collected as
before. What a reload replaces is freed by reference counting; only reference cycles
among frozen objects would outlive it, and they are collected if :func:`unfreeze` runs.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("mlgate.server")

__all__ = ["settle", "unfreeze"]


def settle() -> float:
    """Collect, then freeze what survived; returns the seconds it took."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    took = time.perf_counter() - started
    log.debug(
        "heap settled",
        extra={"frozen_objects": gc.get_freeze_count(), "seconds": round(took, 3)},
    )
    return took


def unfreeze() -> None:
    """Hand the frozen objects back to the collector (before a reload replaces them)."""
    gc.unfreeze()
