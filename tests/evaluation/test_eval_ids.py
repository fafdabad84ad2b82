"""`mlgate eval ids`: any version of `ids` on labelled flows, with held-out reproduction."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlgate.cli.main import cli
from mlgate.evaluation.ids import evaluate_ids
from mlgate.registry.manifest import load_manifest, load_model_file
from mlgate.settings import bundled_repository
from mlgate.training.ids import DEFAULT_DATA

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / DEFAULT_DATA


@pytest.mark.parametrize("version", ["1", "2"])
def test_held_out_evaluation_reproduces_the_manifest(version: str) -> None:
    result = evaluate_ids(bundled_repository(), [DATA], version=version, held_out=True)
    recorded = load_manifest(bundled_repository() / "ids" / version).metrics
    assert result.rows == recorded["split_sizes"]["test"]
    assert result.metrics["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=1e-6)
    assert result.metrics["confusion_matrix"] == recorded["confusion_matrix"]


def test_new_data_is_scored_whole(tmp_path: Path) -> None:
    lines = DATA.read_text().splitlines()
    sample = tmp_path / "flows.csv"
    sample.write_text("\n".join(lines[:301]) + "\n")
    result = evaluate_ids(bundled_repository(), [sample], version="stable")
    assert result.rows == 300
    assert result.version == load_model_file(bundled_repository() / "ids").aliases["stable"]
    assert 0 < result.metrics["macro_f1"] <= 1


@pytest.mark.parametrize("version", ["3", "4"])
def test_versions_trained_on_every_flow_show_their_cv_figures(version: str) -> None:
    result = CliRunner().invoke(cli, ["eval", "ids", "--cv", "--version", version])
    assert result.exit_code == 0, result.output
    cv = load_manifest(bundled_repository() / "ids" / version).metrics["cv"]
    assert (
        f"CV macro-F1 {cv['macro_f1']['mean']:.4f} ± {cv['macro_f1']['std']:.4f}" in result.output
    )
    assert "Infiltration" in result.output and "stratified 5-fold" in result.output
    # They have no held-out split to reproduce.
    with pytest.raises(ValueError, match="no held-out split"):
        evaluate_ids(bundled_repository(), [DATA], version=version, held_out=True)


def test_cv_figures_with_an_evaluation_and_refused_for_split_versions() -> None:
    both = CliRunner().invoke(cli, ["eval", "ids", "--data", str(DATA), "--version", "3", "--cv"])
    assert both.exit_code == 0, both.output
    assert "confusion matrix" in both.output and "CV macro-F1" in both.output
    old = CliRunner().invoke(cli, ["eval", "ids", "--cv", "--version", "1"])
    assert old.exit_code == 2
    assert "--held-out" in old.output
    nothing = CliRunner().invoke(cli, ["eval", "ids"])
    assert nothing.exit_code == 2
    assert "--cv" in nothing.output


def test_held_out_refuses_other_data(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("\n".join(DATA.read_text().splitlines()[:50]) + "\n")
    with pytest.raises(ValueError, match="trained on"):
        evaluate_ids(bundled_repository(), [other], held_out=True)


def test_cli_prints_the_tables() -> None:
    result = CliRunner().invoke(
        cli, ["eval", "ids", "--data", str(DATA), "--version", "2", "--held-out"]
    )
    assert result.exit_code == 0, result.output
    assert "macro-F1 0.8800" in result.output
    assert "confusion matrix" in result.output


def test_cli_names_an_unknown_version() -> None:
    result = CliRunner().invoke(cli, ["eval", "ids", "--data", str(DATA), "--version", "42"])
    assert result.exit_code == 2
    assert "42" in result.output
