"""What the bench needs from the machine: wrk, taskset, the servers' venvs, a description.

The bench never installs system packages itself: it says what to install. MLServer (and
py-spy) go into a virtualenv of their own under ``bench/.venv``, created on first use,
because MLServer pins a FastAPI older than mlgate's. mlgate is served from
``bench/.venv-mlgate``: the project installed as the Dockerfile installs it (a regular
``pip install`` of the core, no extras, byte-compiled), re-installed whenever a file under
``src/`` changes, so it serves this checkout as it is when the bench starts (and editing
the checkout during a run changes nothing). The project's own venv
holds the dev extras - pandas and pyarrow among them, which scikit-learn imports when
they are installed (about 80 MB of RSS and 0.4 s of start-up a server does not have in
production).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
VENV = BENCH_DIR / ".venv"
MLGATE_VENV = BENCH_DIR / ".venv-mlgate"
MLSERVER_VERSION = "1.7.1"


class BenchError(RuntimeError):
    """Something the user must fix before the bench can run; the message says what."""


def missing_tools() -> list[str]:
    """One line per missing system tool, saying how to install it."""
    problems = []
    if shutil.which("wrk") is None:
        problems.append("wrk is not installed: `apt-get install wrk` (Debian's package)")
    if shutil.which("taskset") is None:
        problems.append("taskset is not installed: `apt-get install util-linux`")
    return problems


def check_cores(server_core: int, load_core: int) -> None:
    """Both cores exist and differ: the server and wrk must not share a core."""
    available = sorted(os.sched_getaffinity(0))
    if server_core == load_core:
        raise BenchError("--server-core and --load-core must differ")
    for core in (server_core, load_core):
        if core not in available:
            raise BenchError(f"core {core} is not available (this process may use {available})")


def venv_requirements() -> list[str]:
    """What bench/.venv holds: MLServer with its sklearn runtime, the scikit-learn that
    wrote the model (a joblib file loads only with the release that wrote it), py-spy."""
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        f"scikit-learn=={metadata.version('scikit-learn')}",
        "py-spy",
    ]


def ensure_venv(log: Path) -> Path:
    """bench/.venv with :func:`venv_requirements`, (re)installed when they change."""
    python = VENV / "bin" / "python"
    marker = VENV / ".bench-requirements"
    wanted = "\n".join(venv_requirements()) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    base = os.environ.get("BENCH_PYTHON") or shutil.which("python3") or sys.executable
    print(f"creating {VENV} with {', '.join(venv_requirements())} (a few minutes, once)")
    with log.open("ab") as sink:
        steps = [
            [base, "-m", "venv", str(VENV)],
            [str(python), "-m", "pip", "install", "-q", *venv_requirements()],
        ]
        for argv in steps:
            if subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT).returncode != 0:
                raise BenchError(
                    f"`{' '.join(argv)}` failed; see {log}. MLServer {MLSERVER_VERSION} needs "
                    "Python 3.9-3.12: set BENCH_PYTHON to such an interpreter if python3 is newer"
                )
    marker.write_text(wanted)
    return python


def mlgate_venv_marker() -> str:
    """What bench/.venv-mlgate was installed from: the interpreter and the project's
    dependency list (a change to either reinstalls it)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"python {platform.python_version()}\npyproject.toml sha256 {digest}\n"


def ensure_mlgate_venv(log: Path) -> Path:
    """bench/.venv-mlgate with the project's core install of this checkout; its
    ``mlgate`` command."""
    python = MLGATE_VENV / "bin" / "python"
    marker = MLGATE_VENV / ".bench-install"
    installed = MLGATE_VENV / ".bench-source"
    wanted = mlgate_venv_marker()
    source = source_digest()
    steps: list[list[str]] = []
    if not (python.exists() and marker.exists() and marker.read_text() == wanted):
        print(f"creating {MLGATE_VENV}: mlgate's core install, no extras (a minute, once)")
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(MLGATE_VENV)],
            [str(python), "-m", "pip", "install", "-q", str(ROOT)],
        ]
        installed.unlink(missing_ok=True)
    elif not installed.exists() or installed.read_text() != source:
        print(f"installing this checkout into {MLGATE_VENV} (its sources changed)")
        steps = [
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)]
        ]
    with log.open("ab") as sink:
        for argv in steps:
            if subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT).returncode != 0:
                raise BenchError(f"`{' '.join(argv)}` failed; see {log}")
    marker.write_text(wanted)
    installed.write_text(source)
    return MLGATE_VENV / "bin" / "mlgate"


def source_digest() -> str:
    """sha256 over the package's files under ``src/`` (paths and contents, bytecode
    caches left out): what the bench's install of mlgate was built from."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def venv_tool(name: str) -> Path:
    return VENV / "bin" / name


def redis_available(url: str) -> bool:
    """Whether Redis answers PING at ``url``."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete the keys this run wrote (only those under its own prefix)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _venv_version(package: str) -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return None
    code = f"from importlib.metadata import version; print(version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the machine was."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def machine_info() -> dict[str, Any]:
    """Date, machine, CPU and the versions of what is measured."""
    versions: dict[str, str | None] = {
        name: metadata.version(name)
        for name in ("mlgate", "scikit-learn", "numpy", "uvicorn", "uvloop", "starlette")
    }
    versions["mlserver"] = _venv_version("mlserver")
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "git": _git_commit(),
        "versions": versions,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else None,
        "openblas_env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
        },
        "load_average_at_start": load_average(),
    }
