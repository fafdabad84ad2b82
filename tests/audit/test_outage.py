"""The database goes away mid-traffic: predictions keep being answered, their records
stay queued and are retried, and every one of them is written once it comes back.

- SQLite: another connection holds the database's write lock (``BEGIN EXCLUSIVE``), so
  every write fails with "database is locked" - what a backup or a stuck process does.
  (Making the file read-only with chmod proves nothing here: the suite runs as root, and
  open connections keep writing whatever the mode says.)
- PostgreSQL: the server is shared, so it is not stopped; mlgate reaches it through a
  TCP proxy in the test that is cut (open connections reset, new ones refused) and
  restored.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from mlgate.db.engine import sqlite_path
from tests.audit.conftest import ROW, AppFactory, AuditApp, Caller, eventually
from tests.conftest import POSTGRES_URL, make_settings, running_app

FAST_RETRY = {
    "flush_interval_s": 0.05,
    "retry_initial_s": 0.05,
    "retry_max_s": 0.2,
    "write_timeout_s": 5,
    # No retention pass at start: a test that takes SQLite's write lock from the event
    # loop's thread would wait on a pruner transaction that cannot finish meanwhile.
    "retention_days": 0,
}
# Tokens are checked without the database (it is down), the rest as usual.
STATELESS_TOKENS = {"anonymous_enabled": False, "check_user_on_token": False}


async def _traffic(a: AuditApp, caller: Caller, requests: int, rows: int) -> list[str]:
    """``requests`` batch predictions of ``rows`` rows, all answered 200; their ids."""
    ids: list[str] = []
    for _ in range(requests):
        answers = await a.predict(caller, "ids", [ROW] * rows, headers=caller.with_token)
        ids += [p["prediction_id"] for p in answers]
    return ids


async def _count_written(a: AuditApp, ids: list[str], admin: dict[str, str]) -> set[str]:
    records = await a.list_all(admin)
    return {r["prediction_id"] for r in records} & set(ids)


async def _admin(a: AuditApp) -> dict[str, str]:
    # A token, not an API key: keys are looked up in the database (down in these tests).
    return (await a.caller("admin", ["admin"])).with_token


async def test_sqlite_locked_mid_traffic_loses_no_record(
    audit_app: AppFactory, database: dict[str, Any]
) -> None:
    if not database["database_url"].startswith("sqlite"):
        pytest.skip("the PostgreSQL outage is the proxy test below")
    async with audit_app(
        audit=FAST_RETRY, auth=STATELESS_TOKENS, database={"sqlite_busy_timeout_ms": 20}
    ) as a:
        log = a.audit.log
        assert log is not None
        alice = await a.caller("alice")
        admin = await _admin(a)
        before = await _traffic(a, alice, 2, 3)
        await eventually(lambda: _done(a))
        path = sqlite_path(a.app.state.settings.database_url)
        assert path is not None
        blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            during = await _traffic(a, alice, 20, 3)
            await eventually(lambda: _failed_once(a))
            # Every answer came back while nothing could be written.
            assert log.stats().depth == 60
            assert log.stats().overflow == 0
            reads = await a.client.get("/v1/predictions", headers=admin)
            assert reads.status_code == 503  # it would flush first: the database is needed
            ready = await a.client.get("/health/ready")
            assert ready.status_code == 200  # still serving
            assert ready.json()["checks"]["audit_log"] == "retrying"
        finally:
            blocker.rollback()
            blocker.close()
        await eventually(lambda: _done(a))
        written = await _count_written(a, before + during, admin)
        assert (await a.client.get("/health/ready")).json()["checks"]["audit_log"] == "ok"
    assert written == set(before + during)
    assert log.stats().written == 66


def _chattr(flag: str, *paths: Path) -> bool:
    """Set or clear the immutable attribute (False when this system does not allow it)."""
    if shutil.which("chattr") is None:
        return False
    result = subprocess.run(
        ["chattr", flag, *map(str, paths)], capture_output=True, check=False, timeout=10
    )
    return result.returncode == 0


async def test_sqlite_file_made_read_only_mid_traffic_loses_no_record(
    audit_app: AppFactory, database: dict[str, Any]
) -> None:
    """The database file (and its write-ahead log) made immutable, then writable again:
    unlike a chmod, this also stops the connections already open (and root)."""
    if not database["database_url"].startswith("sqlite"):
        pytest.skip("SQLite only")
    async with audit_app(audit=FAST_RETRY, auth=STATELESS_TOKENS) as a:
        log = a.audit.log
        assert log is not None
        alice = await a.caller("alice")
        admin = await _admin(a)
        before = await _traffic(a, alice, 2, 3)
        await eventually(lambda: _done(a))
        path = sqlite_path(a.app.state.settings.database_url)
        assert path is not None
        files = [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
        if not _chattr("+i", *files):
            pytest.skip("chattr +i is not available or not permitted here")
        try:
            during = await _traffic(a, alice, 10, 3)
            await eventually(lambda: _failed_once(a))
            assert log.stats().depth == 30 and log.stats().overflow == 0
        finally:
            assert _chattr("-i", *files)
        await eventually(lambda: _done(a))
        written = await _count_written(a, before + during, admin)
    assert written == set(before + during)
    assert log.stats().written == 36


async def _done(a: AuditApp) -> bool:
    assert a.audit.log is not None
    return a.audit.log.stats().depth == 0


async def _failed_once(a: AuditApp) -> bool:
    assert a.audit.log is not None
    return a.audit.log.stats().failures > 0


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut (connections reset, new ones refused)
    and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self.writers.discard(writer)
            writer.transport.abort()

    def cut(self) -> None:
        self.up = False
        for writer in list(self.writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            with suppress(Exception):
                await self.server.wait_closed()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_postgres_cut_mid_traffic_loses_no_record(database: dict[str, Any]) -> None:
    if database["database_url"].startswith("sqlite"):
        pytest.skip("the SQLite outage is the lock test above")
    target = urlsplit(POSTGRES_URL)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    settings = make_settings(
        database_url=_through(POSTGRES_URL, proxy.port),
        database={**database["database"], "pool_timeout_s": 2},
        auth=STATELESS_TOKENS,
        audit={**FAST_RETRY, "usage_flush_interval_s": 0.05},
    )
    try:
        async with running_app(settings) as (app, client):
            a = AuditApp(app, client)
            log = a.audit.log
            assert log is not None
            alice = await a.caller("alice")
            admin = await _admin(a)
            before = await _traffic(a, alice, 2, 3)
            await eventually(lambda: _done(a))
            proxy.cut()
            during = await _traffic(a, alice, 20, 3)
            await eventually(lambda: _failed_once(a))
            assert log.stats().depth == 60 and log.stats().overflow == 0
            reads = await client.get("/v1/predictions", headers=admin)
            assert reads.status_code == 503
            proxy.restore()
            await eventually(lambda: _done(a))
            written = await _count_written(a, before + during, admin)
            usage = (await client.get("/v1/usage", headers=alice.with_token)).json()
    finally:
        await proxy.close()
    assert written == set(before + during)
    assert log.stats().written == 66
    # Usage increments kept through the outage too.
    assert usage["totals"]["requests"] == 22 and usage["totals"]["rows"] == 66


async def test_when_full_wait_answers_only_what_it_records(
    audit_app: AppFactory, database: dict[str, Any]
) -> None:
    """``when_full: wait``: with the database locked the queue fills; the next request
    waits for room and gets 503 ``audit_behind`` (Retry-After) when none comes; one that
    is waiting when the database comes back is answered, and every answered row is
    written - none dropped."""
    if not database["database_url"].startswith("sqlite"):
        pytest.skip("locked with SQLite's own write lock")
    audit = {**FAST_RETRY, "when_full": "wait", "queue_max_records": 6, "full_wait_s": 0.5}
    async with audit_app(
        audit=audit, auth=STATELESS_TOKENS, database={"sqlite_busy_timeout_ms": 20}
    ) as a:
        log = a.audit.log
        assert log is not None
        alice = await a.caller("alice")
        admin = await _admin(a)
        path = sqlite_path(a.app.state.settings.database_url)
        assert path is not None
        blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            answered = await _traffic(a, alice, 2, 3)  # 6 rows: the queue is full
            refused = await a.client.post(
                "/v1/models/ids/predict/batch",
                json={"instances": [ROW] * 2},
                headers=alice.with_token,
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "audit_behind"
            assert refused.headers["Retry-After"] == "1"
            assert log.stats().depth == 6 and log.waiting == 0
            waiting = asyncio.create_task(_traffic(a, alice, 1, 2))
            await eventually(lambda: _is(log.waiting == 1))
        finally:
            blocker.rollback()
            blocker.close()
        answered += await waiting  # answered once its rows fit
        await eventually(lambda: _done(a))
        written = await _count_written(a, answered, admin)
        assert written == set(answered) and len(answered) == 8
        assert log.stats().overflow == 0
        assert log.stats().written == 8  # the refused request's rows were never queued


async def _is(value: bool) -> bool:
    return value


async def test_when_full_wait_admits_a_request_larger_than_the_queue_once_it_is_empty(
    audit_app: AppFactory,
) -> None:
    audit = {"when_full": "wait", "queue_max_records": 4, "full_wait_s": 5}
    async with audit_app(audit=audit) as a:
        alice = await a.caller("alice")
        answers = await a.predict(alice, "ids", [ROW] * 10)  # 10 > 4, queue empty
        assert len(answers) == 10
        await eventually(lambda: _done(a))
        assert a.audit.log is not None and a.audit.log.stats().written == 10
