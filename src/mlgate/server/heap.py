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

:func:`return_large_blocks` is the malloc side. glibc serves a block of at least its
mmap threshold from a memory map of its own, given back to the system when freed, but
raises that threshold (up to 32 MiB) each time such a block is freed. After the first
batch request, a batch's buffers (a 1,000 x 77 float64 matrix is 616 KB; the body, the
outputs) come from the heap instead, where the small objects allocated between them
keep the memory from ever being returned: RSS grew by ~90 MB under W2 and stayed. A
fixed threshold keeps large blocks in their own maps.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
import time

log = logging.getLogger("mlgate.server")

__all__ = ["return_large_blocks", "settle", "unfreeze"]

#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3


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


def return_large_blocks(threshold_bytes: int) -> bool:
    """Serve blocks of ``threshold_bytes`` or more from their own memory maps, and keep
    that threshold fixed (glibc's ``mallopt(M_MMAP_THRESHOLD)``). False where the C
    library is not glibc (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols (libc among them): find_library would run ldconfig.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    log.debug("malloc mmap threshold", extra={"bytes": threshold_bytes, "set": done})
    return done
