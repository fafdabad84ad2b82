"""The short window of each device's latest readings, kept in the worker's memory.

Scoring a device's reading uses the mean of its last ``k`` readings (``k`` is the model's
``device_baseline.window``). The window is per worker: when one device's readings are
spread over several workers, each smooths over the readings it saw, and a restart starts
an empty window. Calibration, which decides the verdicts, is in the database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class ReadingWindows:
    """Latest raw readings per device (the server keys them by owner, model and device
    id), least recently used devices dropped."""

    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self._recent: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def smooth(self, key: Hashable, x: np.ndarray, window: int) -> np.ndarray:
        """Append the rows of ``x``; row ``i`` of the result is the mean of the last
        ``window`` readings up to and including ``x[i]`` (fewer at the start)."""
        x = np.asarray(x, dtype=np.float64)
        if window <= 1:
            return x
        history = self._recent.pop(key, None)
        if history is None or history.shape[1] != x.shape[1]:
            history = np.empty((0, x.shape[1]))
        history = history[-(window - 1) :]
        rows = np.vstack([history, x])
        sums = np.vstack([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
        end = np.arange(len(history), len(rows)) + 1
        start = np.maximum(0, end - window)
        smoothed = (sums[end] - sums[start]) / (end - start)[:, None]
        self._recent[key] = rows[-(window - 1) :].copy()
        while len(self._recent) > self.max_devices:
            self._recent.popitem(last=False)
        return smoothed

    def forget(self, key: Hashable) -> None:
        self._recent.pop(key, None)
