"""Random bytes for ids on the request path, drawn from the OS in bulk.

``os.urandom`` releases the GIL around its ``getrandom`` call; on a server whose other
threads (the audit writer, the database driver) are busy, taking the GIL back can cost
the event loop a switch interval (5 ms), and py-spy showed the two calls a request made
among its most expensive lines. :func:`random_bytes` hands out slices of one
``os.urandom`` draw of :data:`POOL_BYTES` instead: the same source, each byte used once.
A forked child (``mlgate serve --workers N``) starts with an empty pool, so workers
never share bytes.
"""

from __future__ import annotations

import os
import threading

#: Bytes drawn from the OS at a time.
POOL_BYTES = 4096


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        if n > POOL_BYTES:
            return os.urandom(n)
        with self._lock:
            if self._at + n > len(self._bytes):
                self._bytes = os.urandom(POOL_BYTES)
                self._at = 0
            start = self._at
            self._at = start + n
            return self._bytes[start : start + n]

    def reset(self) -> None:
        """Forget the drawn bytes (in a forked child: they are the parent's)."""
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.reset)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's random source (as ``os.urandom(n)``)."""
    return _POOL.take(n)
