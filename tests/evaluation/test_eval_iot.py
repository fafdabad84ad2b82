"""``mlgate eval iot`` on a slice of SKAB against an in-process app."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from mlgate.cli.eval import run_evaluation
from mlgate.cli.main import cli
from mlgate.evaluation import evaluate_iot, leaderboard_rows, load_runs
from tests.conftest import DATA_DIR, make_settings, running_app

SKAB = DATA_DIR / "skab"
ROWS = 120
REQUIRED = 40


@pytest.fixture
def slice_dir(tmp_path: Path) -> Path:
    """Two runs cut to their first rows (one in a subfolder) and an unlabelled file."""
    root = tmp_path / "skab"
    for source, target in (("other/5.csv", "5.csv"), ("valve1/3.csv", "sub/3.csv")):
        lines = (SKAB / source).read_text(encoding="utf-8").splitlines()[: ROWS + 1]
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_text("\n".join(lines) + "\n", encoding="utf-8")
    free = (SKAB / "anomaly-free/anomaly-free.csv").read_text(encoding="utf-8").splitlines()
    (root / "free.csv").write_text("\n".join(free[:10]) + "\n", encoding="utf-8")
    return root


async def test_streams_every_run_as_a_device(slice_dir: Path) -> None:
    runs, skipped = load_runs(slice_dir)
    assert [r.name for r in runs] == ["5.csv", "sub/3.csv"]
    assert skipped == ["free.csv"]
    settings = make_settings(devices={"baseline_readings": REQUIRED})
    # Devices belong to an account: anonymous callers cannot stream them (issue 8 item 3).
    async with running_app(settings, as_admin=True) as (_, client):
        console = Console(file=io.StringIO(), width=120)
        await run_evaluation(
            client, console, runs, ["iot-autoencoder", "iot-lof"], batch_size=50, version="2"
        )
        output = console.file.getvalue()  # type: ignore[attr-defined]
        assert "iot-autoencoder" in output and "FAR" in output and "MAR" in output
        scores = await evaluate_iot(
            client, runs, ["iot-isolation-forest"], batch_size=33, version="2"
        )
    (row,) = leaderboard_rows(scores)
    assert row["rows_scored"] == 2 * (ROWS - REQUIRED)
    assert row["calibrating_rows"] == 2 * REQUIRED
    assert row["runs"] == 2
    assert 0.0 <= row["f1"] <= 1.0 and 0.0 <= row["far"] <= 1.0


async def test_uploaded_baselines_with_an_admin_key(slice_dir: Path) -> None:
    runs, _ = load_runs(slice_dir)
    async with running_app(make_settings(), as_admin=True) as (_, client):
        scores = await evaluate_iot(client, runs, ["iot"], baseline_readings=30, version="2")
    (row,) = leaderboard_rows(scores)
    assert row["rows_scored"] == 2 * (ROWS - 30)
    assert row["calibrating_rows"] == 0


async def test_stable_streams_through_the_per_device_detectors(tmp_path: Path) -> None:
    """``stable`` is version 3: each run's first 400 readings (the manifest's calibration
    window, not the baseline setting) calibrate the run's own detector."""
    (tmp_path / "5.csv").write_text((SKAB / "other/5.csv").read_text(encoding="utf-8"))
    runs, _ = load_runs(tmp_path)
    rows = len(runs[0].x)
    settings = make_settings(devices={"baseline_readings": REQUIRED})
    async with running_app(settings, as_admin=True) as (_, client):
        (stable,) = await evaluate_iot(client, runs, ["iot"], batch_size=250)
        (pinned,) = await evaluate_iot(client, runs, ["iot"], batch_size=250, version="3")
    first, second = leaderboard_rows([stable, pinned])
    assert first["calibrating_rows"] == 400
    assert first["rows_scored"] == rows - 400
    assert first == {**second, "model": first["model"]}


def test_cli_reports_an_unreachable_server(slice_dir: Path) -> None:
    result = CliRunner().invoke(
        cli, ["eval", "iot", "--data", str(slice_dir), "--url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output


def test_cli_needs_labelled_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "iot", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "no labelled SKAB CSV files" in result.output


def test_cli_cross_validates_the_per_device_detectors(tmp_path: Path) -> None:
    """`mlgate eval iot-cv` on a few short runs: the families table and the shipped recipe."""
    root = tmp_path / "skab"
    for folder, names in (("valve1", ["0", "1", "2"]), ("other", ["3", "5", "7"])):
        (root / folder).mkdir(parents=True)
        for n in names:
            lines = (SKAB / folder / f"{n}.csv").read_text(encoding="utf-8").splitlines()
            # Keep the anomaly: rows 300..799 of each run (its anomaly starts near 570).
            kept = [lines[0], *lines[301:801]]
            (root / folder / f"{n}.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (root / "anomaly-free").mkdir()
    free = (SKAB / "anomaly-free/anomaly-free.csv").read_text(encoding="utf-8").splitlines()
    (root / "anomaly-free/anomaly-free.csv").write_text("\n".join(free[:1201]) + "\n")
    result = CliRunner().invoke(cli, ["eval", "iot-cv", "--data", str(root)])
    assert result.exit_code == 0, result.output
    assert "leave-runs-out" in result.output
    assert "without temperature / mahalanobis" in result.output
    assert "* shipped:" in result.output and "anomaly-free run: FAR" in result.output
