"""``/health/detailed``: every dependency and resource of this worker, each with a status
and how long its check took.

Statuses: ``ok``; ``degraded`` (serving, but something needs attention: a model version
that failed to load, audit rows waiting for the database, a slow event loop); ``down``
(a dependency that does not answer); ``off`` (not configured). The overall status is
the worst of them.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mlgate.db.engine import sqlite_path
from mlgate.db.readiness import SERVING, database_status

if TYPE_CHECKING:
    from mlgate.api.state import AppState

Check = dict[str, Any]
_ORDER = {"ok": 0, "off": 0, "degraded": 1, "down": 2}
#: An event loop that takes longer than this to run a ready callback is degraded.
LOOP_LAG_DEGRADED_S = 0.1


async def _timed(check: Callable[[], Awaitable[Check]]) -> Check:
    started = time.perf_counter()
    try:
        result = await check()
    except Exception as exc:
        result = {"status": "down", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return result


async def detailed_health(state: AppState) -> dict[str, Any]:
    """Every check of this worker, and the overall status (the worst)."""
    checks = {
        "database": await _timed(lambda: _database(state)),
        "redis": await _timed(lambda: _redis(state)),
        "models": await _timed(lambda: _models(state)),
        "audit_queue": await _timed(lambda: _audit(state)),
        "batchers": await _timed(lambda: _batchers(state)),
        "resources": await _timed(_resources),
    }
    worst = max((c["status"] for c in checks.values()), key=lambda s: _ORDER.get(s, 2))
    return {
        "status": "ok" if worst == "off" else worst,
        "pid": os.getpid(),
        "uptime_seconds": round(state.uptime_seconds, 3),
        "checks": checks,
    }


async def _database(state: AppState) -> Check:
    settings = state.settings
    status = await database_status(state.engine, sqlite_path(settings.database_url))
    return {
        "status": "ok" if status == "ok" else ("degraded" if status in SERVING else "down"),
        "detail": status,
        "backend": "sqlite" if settings.uses_sqlite else "postgresql",
    }


async def _redis(state: AppState) -> Check:
    url = state.settings.redis_url
    if not url:
        return {"status": "off"}
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return {"status": "ok"}


async def _models(state: AppState) -> Check:
    entries = state.registry.models()
    versions = {e.name: sorted(e.versions) for e in entries if e.versions}
    failed = {e.name: sorted(e.errors) for e in entries if e.errors}
    status = "down" if not state.ready else ("degraded" if failed else "ok")
    check: Check = {"status": status, "loaded": versions, "failed": failed}
    if state.load_error:
        check["error"] = "the model repository failed to load"
    return check


async def _audit(state: AppState) -> Check:
    log = state.audit.log if state.audit is not None else None
    if log is None:
        return {"status": "off"}
    stats = log.stats()
    return {
        "status": "ok" if log.status == "ok" else "degraded",
        "detail": log.status,
        "depth": stats.depth,
        "capacity": state.settings.audit.queue_max_records,
        "dropped": stats.overflow,
        "when_full": state.settings.audit.when_full,
        "waiting_requests": log.waiting,
        "written": stats.written,
        "write_failures": stats.failures,
    }


async def _batchers(state: AppState) -> Check:
    runners = state.dataplane.runner.stats()
    busy = [r for r in runners if r["in_flight"] >= r["max_queue"]]
    return {"status": "degraded" if busy else "ok", "versions": runners}


async def _resources() -> Check:
    loop = asyncio.get_running_loop()
    ran: asyncio.Future[float] = loop.create_future()
    queued = loop.time()
    # How long a callback that is ready now waits for the loop: its lag.
    loop.call_soon(ran.set_result, 0.0)
    await ran
    lag = loop.time() - queued
    check: Check = {
        "status": "degraded" if lag > LOOP_LAG_DEGRADED_S else "ok",
        "event_loop_lag_ms": round(lag * 1000, 3),
        "rss_bytes": _rss_bytes(),
        "open_fds": _open_fds(),
        "threads": _threads(),
    }
    return check


def _rss_bytes() -> int | None:
    """Resident memory now (Linux), else the peak the kernel reports."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def _open_fds() -> int | None:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory))
        except OSError:
            continue
    return None


def _threads() -> int:
    import threading

    return threading.active_count()
