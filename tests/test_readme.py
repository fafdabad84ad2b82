"""The README stays true: its configuration table is the settings' own."""

from __future__ import annotations

from click.testing import CliRunner

from mlgate.cli.main import cli
from tests.conftest import PROJECT_ROOT


def test_configuration_table_matches_the_settings() -> None:
    table = CliRunner().invoke(cli, ["config", "--markdown"]).output.strip()
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert table in readme, "README configuration table is stale: paste `mlgate config --markdown`"


def test_readme_names_the_two_commands_that_ci_runs() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()
