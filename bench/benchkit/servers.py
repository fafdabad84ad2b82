"""Starting a server pinned to its core, timing its readiness, measuring its memory.

Every server gets the same environment (the caller's, without MLGATE_*/MLSERVER_*
variables) with one BLAS/OpenMP thread: it is pinned to one core, where more threads
would only take turns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchkit.configs import ServerConfig
from benchkit.tools import BENCH_DIR, BenchError, venv_tool
from benchkit.workloads import MODEL_NAME

ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

READY_PATHS = {
    "ceiling": "/health",
    "mlserver": f"/v2/models/{MODEL_NAME}/ready",
    "mlgate": "/health/ready",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLSERVER_"))}
    env.update(ONE_THREAD)
    return env


def write_mlserver_settings(repo: Path, http_port: int) -> None:
    """MLServer's server-wide settings: its defaults, except the ports and
    ``parallel_workers: 0`` (with the default, its inference worker crashes at start
    under uvloop 0.23)."""
    settings = {
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")


def server_argv(config: ServerConfig, port: int, repo: Path, mlgate: Path) -> list[str]:
    """The command that serves ``config`` on ``port`` (not yet pinned); ``mlgate``: the
    ``mlgate`` command to serve mlgate with."""
    if config.kind == "ceiling":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "benchkit.ceiling:app",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    if config.kind == "mlserver":
        write_mlserver_settings(repo, port)
        return [str(venv_tool("mlserver")), "start", str(repo)]
    return [str(mlgate), "serve", "--port", str(port), "--repository", str(repo)]


@dataclass
class RunningServer:
    """A server process that answered its readiness probe."""

    config: ServerConfig
    process: subprocess.Popen[bytes]
    url: str
    ready_s: float
    log: Path

    def rss_mb(self) -> float:
        """Resident memory of the process and all its descendants, in MB (10^6 bytes)."""
        return tree_rss_kib(self.process.pid) * 1024 / 1e6

    def cpu_ticks(self) -> int:
        """CPU time used so far by the process tree (user + system, clock ticks)."""
        return tree_cpu_ticks(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)


def start_server(
    config: ServerConfig,
    argv: list[str],
    *,
    env: dict[str, str],
    port: int,
    log: Path,
    core: int,
    cwd: Path,
    timeout_s: float = 120.0,
) -> RunningServer:
    """Start ``argv`` pinned to ``core``; return once readiness answers 200.

    The ready time runs from just before the process is created to the first 200.
    """
    url = f"http://127.0.0.1:{port}"
    probe = url + READY_PATHS[config.kind]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise BenchError(
                    f"{config.key} exited with {process.returncode} before it was ready; "
                    f"its log:\n{tail(log)}"
                )
            try:
                if client.get(probe).status_code == 200:
                    ready_s = time.perf_counter() - started
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > timeout_s:
                stop_process(process)
                raise BenchError(f"{config.key} was not ready within {timeout_s:g} s:\n{tail(log)}")
            time.sleep(0.01)
    return RunningServer(config, process, url, ready_s, log)


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the process (and its descendants, which share its session), then SIGKILL."""
    if process.poll() is None:
        descendants = _descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants, in KiB."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads) and its descendants, in clock ticks."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def cpu_percent(ticks: int, seconds: float) -> float:
    """Clock ticks used over ``seconds`` as a percentage of one core."""
    return 100.0 * ticks / os.sysconf("SC_CLK_TCK") / seconds if seconds > 0 else 0.0


_PROBLEM = re.compile(r"Traceback|\"level\": \"(error|critical)\"|\bERROR\b")


def log_problems(log: Path) -> int:
    """Lines of a server log that report an error or a traceback."""
    try:
        with log.open("r", errors="replace") as fh:
            return sum(1 for line in fh if _PROBLEM.search(line))
    except OSError:
        return 0


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
