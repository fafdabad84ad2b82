"""Running `mlgate serve` as a real process in tests: start, wait until ready, stop."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """The test process's environment without MLGATE_* variables, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    env.update(settings)
    return env


@dataclass(frozen=True)
class RunningServer:
    url: str
    log: Path
    """Everything the server printed (stdout and stderr)."""
    process: subprocess.Popen[bytes]
    """The `mlgate serve` process (e.g. to send it a signal)."""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def mlgate_serve(
    workdir: Path,
    env: dict[str, str],
    *args: str,
    timeout_s: float = 90,
    ready_in_a_row: int = 1,
    ready_path: str = "/health/ready",
    log_level: str = "warning",
) -> Iterator[RunningServer]:
    """``mlgate serve`` in ``workdir`` until the block ends (SIGTERM, then kill).

    Ready once ``ready_in_a_row`` consecutive readiness probes answered 200: with several
    workers each loads its models, and readiness is per worker. ``log_level="info"`` with
    ``MLGATE_OBSERVABILITY__ACCESS_LOG=true`` logs every request (see :func:`access_log`).
    ``ready_path`` probes something else (``/health/live`` for a server that is meant not
    to be ready).
    """
    port = free_port()
    log = workdir / f"serve-{port}.log"
    argv = [sys.executable, "-m", "mlgate", "serve", "--port", str(port)]
    argv += [*args, "--log-level", log_level]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        streak = 0
        while streak < ready_in_a_row:
            if process.poll() is not None:
                pytest.fail(f"mlgate serve exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlgate serve was not ready within {timeout_s} s:\n{log.read_text()}")
            try:
                ok = httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            streak = streak + 1 if ok else 0
            time.sleep(0.05 if ok else 0.2)
        yield RunningServer(url, log, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class AccessLine:
    """One request as the access log of a JSON-logging server recorded it."""

    pid: int
    request_id: str | None
    line: str
    """Method, route template and status, e.g. ``POST /predict 200``."""


def access_log(log: Path) -> list[AccessLine]:
    """The requests a server logged (it runs with ``MLGATE_OBSERVABILITY__ACCESS_LOG=true``
    and ``log_level="info"``); each line carries the pid of the worker that served it."""
    lines = []
    # The last line may be one a worker is writing right now (a read can see part of a
    # write): only lines that end with their newline count.
    complete = log.read_text(errors="replace").split("\n")[:-1]
    for text in complete:
        if not text.startswith("{"):
            continue
        record = json.loads(text)
        if record.get("logger") == "mlgate.access":
            lines.append(AccessLine(record["pid"], record.get("request_id"), record["message"]))
    return lines


def pids_serving(log: Path, request_ids: Iterable[str], timeout_s: float = 5) -> dict[str, int]:
    """Which worker (pid) served each of ``request_ids`` (sent as ``X-Request-ID``),
    waiting a little for lines not yet written."""
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        found = {a.request_id: a.pid for a in access_log(log) if a.request_id in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found  # type: ignore[return-value]
        time.sleep(0.02)


def request_id() -> str:
    """A fresh ``X-Request-ID`` to find a request in the access log."""
    return f"t-{secrets.token_hex(8)}"


@dataclass
class Worker:
    """A keep-alive connection that one worker process of a server accepted.

    Requests sent with :meth:`request` reach that worker as long as the connection
    stays open (uvicorn closes it after 5 s idle); each one is checked in the access log.
    """

    pid: int
    client: httpx.Client
    log: Path
    last_used: float = 0.0

    def send(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int | None]:
        """The response and the pid of the worker that served it."""
        rid = request_id()
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": rid}
        response = self.client.request(method, path, headers=headers, **kwargs)
        self.last_used = time.monotonic()
        return response, pids_serving(self.log, [rid]).get(rid)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response, served_by = self.send(method, path, **kwargs)
        assert served_by == self.pid, (
            f"{method} {path} reached worker {served_by}, not {self.pid} (connection lost?)"
        )
        return response


#: Held connections are used at least this often while more are opened (uvicorn drops
#: a connection idle for 5 s).
KEEP_ALIVE_S = 2.0


@contextmanager
def connections_to_workers(
    server: RunningServer, workers: int, per_worker: int = 1, attempts: int = 400
) -> Iterator[dict[int, list[Worker]]]:
    """``per_worker`` open connections to each of ``workers`` worker processes (by pid).

    New connections are opened one after the other (the kernel hands each to one of
    the workers waiting on the shared socket) until every worker holds its share; the
    access log says which worker accepted each. Fails when fewer processes answer:
    the server does not run ``workers`` workers.
    """
    held: dict[int, list[Worker]] = {}
    opened: list[httpx.Client] = []
    limits = httpx.Limits(max_connections=1, keepalive_expiry=60)

    def complete() -> bool:
        full = [pid for pid, conns in held.items() if len(conns) >= per_worker]
        return len(full) >= workers

    def keep_alive() -> None:
        for pid, conns in held.items():
            for worker in list(conns):
                if time.monotonic() - worker.last_used > KEEP_ALIVE_S:
                    _, served_by = worker.send("GET", "/health/live")
                    if served_by != pid:  # reconnected elsewhere: not pinned any more
                        conns.remove(worker)

    try:
        for _ in range(attempts):
            keep_alive()
            if complete():
                break
            client = httpx.Client(base_url=server.url, limits=limits, timeout=30)
            opened.append(client)
            probe = Worker(0, client, server.log)
            response, pid = probe.send("GET", "/health/live")
            assert response.status_code == 200 and pid is not None, response.text
            if len(held.setdefault(pid, [])) < per_worker:
                held[pid].append(Worker(pid, client, server.log, probe.last_used))
        counts = {pid: len(conns) for pid, conns in held.items()}
        if not complete():
            pytest.fail(
                f"expected {workers} worker processes to accept {per_worker} connections "
                f"each; after {len(opened)} connections: {counts} (connections per pid)"
            )
        yield {pid: conns[:per_worker] for pid, conns in held.items() if len(conns)}
    finally:
        for client in opened:
            client.close()


@dataclass(frozen=True)
class LiveServer:
    """A running server and the key of its admin (printed by its first start)."""

    server: RunningServer
    admin_key: str

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def live_server_with_admin(
    workdir: Path, models: Iterable[str], **settings: str
) -> Iterator[LiveServer]:
    """``mlgate serve`` on SQLite with only ``models`` of the bundled repository (quicker
    to load) and the admin the first start creates; usage counted every 0.5 s;
    ``settings``: more environment variables (``MLGATE_...``; they win over these, e.g.
    ``MLGATE_DATABASE_URL`` for another database)."""
    from mlgate.settings import bundled_repository

    repository = workdir / "models"
    for model in models:
        shutil.copytree(bundled_repository() / model, repository / model)
    defaults = {
        "MLGATE_MODELS__REPOSITORY": str(repository),
        "MLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'mlgate.db'}",
        "MLGATE_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "MLGATE_AUTH__BOOTSTRAP_ADMIN": "true",
        "MLGATE_AUTH__ARGON2_TIME_COST": "1",
        "MLGATE_AUTH__ARGON2_MEMORY_COST_KIB": "8",
        "MLGATE_AUTH__ARGON2_PARALLELISM": "1",
        "MLGATE_AUDIT__USAGE_FLUSH_INTERVAL_S": "0.5",
    }
    env = clean_env(**{**defaults, **settings})
    with mlgate_serve(workdir, env) as running:
        (admin_key,) = set(re.findall(r"mlg_[A-Za-z0-9_-]+", running.log.read_text()))
        yield LiveServer(running, admin_key)
