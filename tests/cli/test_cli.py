"""The CLI's commands other than serve and train."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

import mlgate
from mlgate.cli.main import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert mlgate.__version__ in result.output


def test_models_list_shows_the_bundled_models() -> None:
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    for name in ("ids", "iot", "iot-lof"):
        assert name in result.output


def test_models_list_exits_1_and_names_a_broken_version(model_repo: Path) -> None:
    broken = model_repo / "ids" / "9"
    shutil.copytree(model_repo / "ids" / "1", broken)
    manifest = yaml.safe_load((broken / "manifest.yaml").read_text())
    manifest["version"] = "9"
    manifest["runtime"] = "tensorflow"
    (broken / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    result = CliRunner().invoke(cli, ["models", "list", "--repository", str(model_repo)])
    assert result.exit_code == 1
    assert "unknown runtime" in result.output


def test_serve_refuses_reload_with_workers() -> None:
    result = CliRunner().invoke(cli, ["serve", "--reload", "--workers", "2"])
    assert result.exit_code == 2
    assert "--reload" in result.output


def test_serve_refuses_a_missing_repository(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--repository", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
