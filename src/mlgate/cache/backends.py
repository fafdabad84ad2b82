"""Where cached answers live: a bounded in-process LRU with TTL, or Redis
(:mod:`mlgate.cache.redis_backend`, imported only when configured).

Both store a model version's raw output (the float64 array the runtime returned for a
whole request) under ``(namespace, digest)``: the namespace names the model version as
loaded, the digest the canonical input. Both pass the same tests.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("mlgate.cache")


class CacheBackend(Protocol):
    """Stores raw model outputs; never raises on the request path (an outage is a miss)."""

    name: str

    async def get(self, namespace: str, digest: str) -> np.ndarray | None:
        """The stored array, or None (absent, expired or unreachable)."""
        ...

    async def put(self, namespace: str, digest: str, value: np.ndarray, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds (best effort)."""
        ...

    def drop_namespace(self, namespace: str) -> None:
        """Forget a model version's entries (it stopped serving)."""
        ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class MemoryCache:
    """A least-recently-used map bounded by entry count, each entry with a deadline."""

    name = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, np.ndarray]] = OrderedDict()
        self._namespaces: dict[str, set[str]] = {}
        self.evictions = 0

    async def get(self, namespace: str, digest: str) -> np.ndarray | None:
        key = (namespace, digest)
        found = self._entries.get(key)
        if found is None:
            return None
        deadline, value = found
        if deadline <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, namespace: str, digest: str, value: np.ndarray, ttl_s: float) -> None:
        key = (namespace, digest)
        stored = np.array(value, copy=True)
        stored.flags.writeable = False  # shared by every hit: nobody may change it
        self._entries[key] = (self._clock() + ttl_s, stored)
        self._entries.move_to_end(key)
        self._namespaces.setdefault(namespace, set()).add(digest)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1

    def drop_namespace(self, namespace: str) -> None:
        for digest in self._namespaces.pop(namespace, ()):
            self._entries.pop((namespace, digest), None)

    def _remove(self, key: tuple[str, str]) -> None:
        del self._entries[key]
        digests = self._namespaces.get(key[0])
        if digests is not None:
            digests.discard(key[1])
            if not digests:
                del self._namespaces[key[0]]

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "entries": len(self._entries),
            "max_entries": self.max_entries,
            "evictions": self.evictions,
        }

    async def close(self) -> None:
        self._entries.clear()
        self._namespaces.clear()


def pack(value: np.ndarray) -> bytes:
    """``ndim``, the shape and the float64 data, little-endian."""
    array = np.ascontiguousarray(value, dtype="<f8")
    return struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape) + array.tobytes()


def unpack(blob: bytes) -> np.ndarray:
    """The array :func:`pack` wrote (read-only, backed by ``blob``)."""
    ndim = blob[0]
    header = 1 + 4 * ndim
    shape = struct.unpack(f"<{ndim}I", blob[1:header])
    return np.frombuffer(blob, dtype="<f8", offset=header).reshape(shape)
