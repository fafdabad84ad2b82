"""The Dockerfile: multi-stage with a slim runtime and no build tools in it, a non-root
user, configuration only through MLGATE_*, and CMD / HEALTHCHECK / COPY naming a command,
a route and files that exist. Its HEALTHCHECK command is run against a real server."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from mlgate.cli.main import cli
from mlgate.settings import bundled_repository
from tests.deploy.dockerfile import Stage, parse
from tests.deploy.support import ROOT, known_variables
from tests.servers import LiveServer, free_port

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "git", "curl", "wget")


def _stages() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE)


def _runtime() -> Stage:
    return _stages()[1][-1]


def _ignored(relative: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


def test_multi_stage_with_a_slim_runtime() -> None:
    args, stages = _stages()
    assert len(stages) >= 2
    build, runtime = stages[0], stages[-1]
    base = args.get(runtime.base.strip("${}"), runtime.base)
    assert "slim" in base
    # Compilers are installed in the build stage only.
    build_runs = " ".join(i.value for i in build.all("RUN"))
    assert "build-essential" in build_runs
    runtime_runs = " ".join(i.value for i in runtime.all("RUN"))
    assert not [tool for tool in BUILD_TOOLS if tool in runtime_runs.split()]
    assert "apt-get install" not in runtime_runs
    (copied,) = [c for c in runtime.all("COPY") if c.value.startswith("--from=")]
    assert copied.words()[0] == f"--from={build.name}"


def test_runs_as_a_non_root_user() -> None:
    user = _runtime().last("USER").value
    uid = user.split(":")[0]
    assert uid not in ("0", "root")
    assert int(uid) >= 1000


def test_configuration_only_through_mlgate_variables() -> None:
    env: dict[str, str] = {}
    for instruction in _runtime().all("ENV"):
        for word in instruction.words():
            key, _, value = word.partition("=")
            env[key] = value
    settings = {k for k in env if k.startswith("MLGATE_")}
    assert settings <= known_variables()
    assert set(env) - settings <= {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    # Only where to listen is set: in a container the port must be reachable.
    assert env["MLGATE_SERVER__HOST"] == "0.0.0.0"
    assert not _runtime().all("VOLUME")


def test_copied_paths_exist_and_reach_the_build_context() -> None:
    _args, stages = _stages()
    copied = 0
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            words = [w for w in instruction.words() if not w.startswith("--")]
            if any(w.startswith("--from=") for w in instruction.words()):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), source
                assert not _ignored(source), f"{source} is excluded by .dockerignore"
                copied += 1
    assert copied >= 3  # pyproject.toml, README.md, src


def test_the_installed_package_carries_models_and_dashboard(tmp_path: Path) -> None:
    """The image runs `pip install .`: the wheel it builds holds every file of the
    package the repository tracks (the bundled models, the dashboard's page), so the
    runtime stage needs nothing else from the source tree."""
    from hatchling.builders.wheel import WheelBuilder

    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("mlgate/")}
    tracked = subprocess.run(
        ["git", "ls-files", "src/mlgate"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    expected = {path.removeprefix("src/") for path in tracked}
    assert expected - packaged == set()
    assert "mlgate/bundled_models/ids/model.yaml" in packaged
    assert {"mlgate/dashboard/index.html", "mlgate/dashboard/dashboard.js"} <= packaged
    assert str(bundled_repository()).startswith(str(ROOT / "src" / "mlgate"))
    for source in ("src/mlgate/bundled_models/ids/model.yaml", "src/mlgate/dashboard/index.html"):
        assert not _ignored(source)


def test_entrypoint_is_mlgate_serve() -> None:
    runtime = _runtime()
    command = runtime.last("ENTRYPOINT").exec_form() + runtime.last("CMD").exec_form()
    assert command == ["mlgate", "serve"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["mlgate"] == "mlgate.cli.main:cli"
    assert cli.get_command(None, "serve") is not None  # type: ignore[arg-type]
    exposed = runtime.last("EXPOSE").value
    port = [i for i in runtime.all("ENV") if "MLGATE_SERVER__PORT=" in i.value]
    assert port and f"MLGATE_SERVER__PORT={exposed}" in port[0].value


def _healthcheck() -> list[str]:
    command = _runtime().last("HEALTHCHECK").exec_form()
    assert command[:2] == ["python", "-c"]
    return [sys.executable, *command[1:]]


def test_healthcheck_passes_against_a_live_server(live_server: LiveServer) -> None:
    """The HEALTHCHECK command, run as Docker would (the image's MLGATE_SERVER__PORT),
    succeeds against `mlgate serve` and fails when nothing answers."""
    assert "/health/live" in _healthcheck()[-1]
    probe = {**os.environ, "MLGATE_SERVER__PORT": str(live_server.server.port)}
    done = subprocess.run(_healthcheck(), env=probe, capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert httpx.get(f"{live_server.url}/health/live").json() == {"status": "alive"}
    nothing = {**os.environ, "MLGATE_SERVER__PORT": str(free_port())}
    done = subprocess.run(_healthcheck(), env=nothing, capture_output=True, timeout=10)
    assert done.returncode != 0


@pytest.mark.parametrize("path", ["tests", "data", ".git", "bench", "src/mlgate/x/__pycache__"])
def test_dockerignore_keeps_the_context_small(path: str) -> None:
    assert _ignored(path)
    assert not _ignored("src/mlgate/cli/main.py")
