"""Running `mlgate serve` as a real process in tests: start, wait until ready, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    workers each loads its models, and readiness is per worker. ``ready_path`` probes
    something else (``/health/live`` for a server that is meant not to be ready).
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
