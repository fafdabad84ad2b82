"""Per-device scoring through HTTP gives the figures the README's IoT table promises.

Every run of ``data/skab/other`` is streamed through the HTTP API as one device, with
the same code as ``mlgate eval iot`` (first 400 readings calibrate, every later reading
is scored), with version 2 (the baselines; ``stable`` is the per-device detectors of
version 3), on one worker: each run is smoothed over one window, as offline. The pooled
F1 / FAR / MAR / precision / recall must equal the README's table within its rounding
(± 0.0005) and the manifest's ``device_baseline.metrics`` within ± 1e-6 (its rounding).
Scoring raw readings instead of the smoothed window moves them by far more.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from mlgate.evaluation import evaluate_iot, leaderboard_rows, load_runs
from mlgate.registry.manifest import load_manifest
from mlgate.settings import bundled_repository
from tests.conftest import DATA_DIR, PROJECT_ROOT, make_settings, running_app

TEST_RUNS = DATA_DIR / "skab" / "other"
README_ROWS_SCORED = 9329
#: The README prints three decimals.
README_TOLERANCE = 0.0005
#: The manifests keep six.
MANIFEST_TOLERANCE = 1e-6
COLUMNS = {
    "f1": "test F1",
    "far": "test FAR",
    "mar": "test MAR",
    "precision": "precision",
    "recall": "recall",
}
MANIFEST_KEYS = {
    "f1": "f1",
    "far": "false_alarm_rate",
    "mar": "missed_alarm_rate",
    "precision": "precision",
    "recall": "recall",
}


def readme_device_table() -> dict[str, dict[str, str]]:
    """The README's per-device table: detector name -> {column header: cell}."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Per-device baselines (IoT)", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]  # (the version 3 detectors have a table too)
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[1:]:
        cells = [cell.strip().replace("*", "") for cell in line.strip("|").split("|")]
        name = re.match(r"[\w-]+", cells[0])
        assert name is not None, line
        table[name.group(0)] = dict(zip(header, cells, strict=True))
    return table


def test_the_readme_table_names_the_four_detectors() -> None:
    table = readme_device_table()
    assert set(table) == {
        "iot-device-distance",
        "iot-autoencoder",
        "iot-isolation-forest",
        "iot-lof",
    }
    for name, row in table.items():
        spec = load_manifest(bundled_repository() / name / "2").device_baseline
        assert spec is not None, name
        assert int(row["window"]) == spec.window, name


@pytest.mark.slow
async def test_http_device_scoring_reproduces_the_readme_table() -> None:
    table = readme_device_table()
    runs, _ = load_runs(TEST_RUNS)
    async with running_app(make_settings(), as_admin=True) as (_, client):
        scores = await evaluate_iot(client, runs, list(table), version="2")
    problems: list[str] = []
    for got in leaderboard_rows(scores):
        name = got["model"]
        assert got["rows_scored"] == README_ROWS_SCORED, name
        spec = load_manifest(bundled_repository() / name / "2").device_baseline
        assert spec is not None
        offline: dict[str, Any] = spec.metrics
        for key, column in COLUMNS.items():
            documented = float(table[name][column])
            if abs(got[key] - documented) > README_TOLERANCE:
                problems.append(f"{name} {column}: HTTP {got[key]:.4f}, README {documented}")
            recorded = float(offline[MANIFEST_KEYS[key]])
            if abs(got[key] - recorded) > MANIFEST_TOLERANCE:
                problems.append(f"{name} {key}: HTTP {got[key]:.6f}, manifest {recorded}")
    assert not problems, "\n".join(problems)


def readme_detector_table() -> dict[tuple[str, str], dict[str, str]]:
    """The README's HTTP figures of the version 3 detectors: (model, folder) -> row."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("### Per-device detectors (version 3)", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("| ")]
    start = next(i for i, line in enumerate(lines) if "detector (version 3)" in line)
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    table = {}
    for line in lines[start + 2 :]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        model, folder = cells[0].split(" on ")
        table[(model, folder)] = dict(zip(header, cells, strict=True))
    return table


@pytest.mark.slow
async def test_stable_device_detectors_reproduce_the_readme_figures() -> None:
    """``stable`` (version 3) streamed through HTTP gives the README's table."""
    table = readme_detector_table()
    assert {folder for _, folder in table} == {"valve1", "other"}
    problems: list[str] = []
    results = {}
    async with running_app(make_settings(), as_admin=True) as (_, client):
        for folder in ("valve1", "other"):
            runs, _ = load_runs(DATA_DIR / "skab" / folder)
            models = [model for model, f in table if f == folder]
            results[folder] = await evaluate_iot(client, runs, models)
    for folder, scores in results.items():
        for got in leaderboard_rows(scores):
            row = table[(got["model"], folder)]
            assert got["runs"] == int(row["runs"])
            assert got["rows_scored"] == int(row["rows scored"])
            for key, column in {**COLUMNS, "f1": "F1", "far": "FAR", "mar": "MAR"}.items():
                documented = float(row[column])
                if abs(got[key] - documented) > README_TOLERANCE:
                    problems.append(f"{got['model']} on {folder} {column}: {got[key]:.4f}")
    assert not problems, "\n".join(problems)
