"""The README stays true: its configuration table is the settings' own, and the command
it says CI runs is the one `.ci/run` really runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from click.testing import CliRunner

from mlgate.cli.main import cli
from tests.conftest import PROJECT_ROOT


def test_configuration_table_matches_the_settings() -> None:
    table = CliRunner().invoke(cli, ["config", "--markdown"]).output.strip()
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert table in readme, "README configuration table is stale: paste `mlgate config --markdown`"


def _fake_tools(bin_dir: Path, calls: Path) -> None:
    """Stand-ins on PATH: services that answer at once, and a ``make`` that only records
    its arguments (one call a line) instead of building anything."""
    bin_dir.mkdir()
    tools = {
        "make": f'#!/bin/sh\necho "$*" >> "{calls}"\n',
        "pg_isready": "#!/bin/sh\nexit 0\n",
        "redis-cli": "#!/bin/sh\necho PONG\n",
    }
    for name, script in tools.items():
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)


def test_readme_names_the_two_commands_that_ci_runs(tmp_path: Path) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    # Run .ci/run itself with a recording `make`: a `make test` commented out, removed or
    # made unreachable is caught, not only its text.
    calls = tmp_path / "make-calls"
    _fake_tools(tmp_path / "bin", calls)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / ".ci" / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    made = calls.read_text().splitlines() if calls.exists() else []
    assert "test" in made, f".ci/run ran make with {made or 'nothing'}: `make test` is missing"


def test_package_description_promises_only_what_exists() -> None:
    """pyproject's one-line description names features that are there today: a feature
    in it must have its module (audit log and metrics come with theirs)."""
    import tomllib

    import mlgate

    description = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
        "description"
    ].lower()
    package = Path(mlgate.__file__).parent
    needs = {
        "audit": package / "audit",
        "metrics": package / "observability",
        "tracing": package / "observability",
        "batching": package / "dataplane",
        "cach": package / "dataplane",
        "rate limit": package / "ratelimit",
        "baseline": package / "devices",
        "oauth2": package / "auth",
    }
    for word, module in needs.items():
        if word in description:
            assert module.is_dir(), f"the description promises {word!r}; {module.name}/ is missing"
