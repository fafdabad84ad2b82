"""The metrics directory of a multi-worker server (prometheus_client multiprocess mode).

``mlgate serve --workers N`` makes a fresh private directory per run (never one left by
an earlier run: its counts would be added to this run's) and removes it at exit. A
worker that exits leaves its counters (their counts stay in the totals) but its live
gauges (requests in flight, audit queue depth) must go: a worker removes its own at
shutdown, and every scrape removes those of workers that died without shutting down.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: What prometheus_client reads, once, when it is first imported: this module must not
#: import it before the directory is set up (a single worker runs in this process).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """A fresh private directory, exported as ``PROMETHEUS_MULTIPROC_DIR`` to the workers
    started inside the block; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mlgate-metrics-"))  # mode 0700
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


class _LiveWorkers:
    """Every worker's metric files, once the live gauges of dead workers are forgotten."""

    def __init__(self, path: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.path = path
        self._files = MultiProcessCollector(None, path=path)

    def collect(self) -> Iterator[Any]:
        forget_dead_workers(self.path)
        return iter(self._files.collect())


@contextlib.contextmanager
def metrics_port(path: Path, host: str, port: int) -> Iterator[None]:
    """``/metrics`` of every worker on ``host:port``, from this (the supervising)
    process, without authentication, until the block ends."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_LiveWorkers(str(path)))
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process now holds the number
        return True
    return True


def mark_dead(pid: int, path: str) -> None:
    """Forget the live gauges of worker ``pid`` (its counters stay in the totals)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, path)


def forget_dead_workers(path: str) -> list[int]:
    """Remove the live gauges of workers that are gone; returns their pids."""
    dead = set()
    for name in os.listdir(path) if os.path.isdir(path) else ():
        match = _LIVE_GAUGE_FILE.match(name)
        if match is not None and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_dead(pid, path)
    return sorted(dead)
