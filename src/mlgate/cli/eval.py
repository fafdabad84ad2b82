"""``mlgate eval``: measure a running server's models on labelled data over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import httpx

    from mlgate.evaluation.iot import SkabRun


@click.group(name="eval")
def eval_group() -> None:
    """Evaluate a running server's models through its HTTP API."""


@eval_group.command("iot")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="Folder of SKAB CSV runs (';'-separated, searched recursively), e.g. data/skab/other.",
)
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Server URL.")
@click.option("--api-key", envvar="MLGATE_API_KEY", help="API key (or MLGATE_API_KEY).")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model to evaluate (repeatable; default: the four IoT detectors).",
)
@click.option(
    "--baseline-readings",
    type=click.IntRange(2),
    default=None,
    help="Upload each run's baseline from its first N readings (needs an admin key; "
    "baselines serve version 2, --version 2); default: the server calibrates on its "
    "own setting (400).",
)
@click.option(
    "--version",
    default=None,
    help="Version or alias of every model (default: each model's stable). Version 2 "
    "scores against device baselines, version 3 with per-device detectors.",
)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=200, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
def eval_iot(
    data_dir: Path,
    url: str,
    api_key: str | None,
    models: tuple[str, ...],
    baseline_readings: int | None,
    version: str | None,
    batch_size: int,
    concurrency: int,
) -> None:
    """Stream SKAB runs through the server, one device per run, and print F1/FAR/MAR."""
    import httpx

    from mlgate.evaluation.iot import DEFAULT_MODELS, EvaluationError, load_runs
    from mlgate.training.common import DataError

    console = Console()
    try:
        runs, skipped = load_runs(data_dir)
    except (EvaluationError, DataError) as exc:
        raise click.ClickException(str(exc)) from None
    if skipped:
        console.print(f"[dim]skipped (no labels): {', '.join(skipped)}[/dim]")
    headers = {"X-API-Key": api_key} if api_key else {}

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            await run_evaluation(
                client,
                console,
                runs,
                list(models or DEFAULT_MODELS),
                batch_size=batch_size,
                baseline_readings=baseline_readings,
                concurrency=concurrency,
                version=version,
            )

    try:
        asyncio.run(main())
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from None
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None


async def run_evaluation(
    client: httpx.AsyncClient,
    console: Console,
    runs: Sequence[SkabRun],
    models: Sequence[str],
    *,
    batch_size: int = 200,
    baseline_readings: int | None = None,
    concurrency: int = 4,
    version: str | None = None,
) -> Table:
    """Stream with a progress display and print the leaderboard table (also returned)."""
    from mlgate.evaluation.iot import evaluate_iot, leaderboard_rows
    from mlgate.training.common import make_progress

    total = sum(len(r.x) for r in runs)
    with make_progress(console) as progress:
        tasks = {m: progress.add_task(m, total=total, status="") for m in models}
        scores = await evaluate_iot(
            client,
            runs,
            models,
            batch_size=batch_size,
            baseline_readings=baseline_readings,
            concurrency=concurrency,
            version=version,
            advance=lambda m, n: progress.update(tasks[m], advance=n),
        )
    which = f", version {version}" if version is not None else ""
    table = Table(title=f"Per-device evaluation ({len(runs)} runs, one device per run{which})")
    for column in ("model", "F1", "FAR", "MAR", "precision", "recall", "rows scored"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in leaderboard_rows(scores):
        table.add_row(
            row["model"],
            f"{row['f1']:.3f}",
            f"{row['far']:.3f}",
            f"{row['mar']:.3f}",
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            str(row["rows_scored"]),
        )
    console.print(table)
    return table


@eval_group.command("ids")
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Labelled CICIDS2017 CSV file(s) with the original column names.",
)
@click.option("--model", default="ids", show_default=True, help="Classifier to evaluate.")
@click.option("--version", default=None, help="Version or alias (default: stable).")
@click.option(
    "--repository",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Model repository (default: the configured one).",
)
@click.option(
    "--held-out",
    is_flag=True,
    help="Score only the test split the version recorded (needs its training data): "
    "reproduces the metrics in its manifest (versions trained on a split).",
)
@click.option(
    "--cv",
    "show_cv",
    is_flag=True,
    help="Print the version's recorded stratified cross-validation figures (per class, "
    "mean ± std and min-max over the folds); with --data, after the evaluation.",
)
def eval_ids(
    data: tuple[Path, ...],
    model: str,
    version: str | None,
    repository: Path | None,
    held_out: bool,
    show_cv: bool,
) -> None:
    """Classify labelled flows with a version of `ids` (loaded as the server loads it)
    and print per-class precision / recall / F1, macro-F1 and the confusion matrix."""
    from mlgate.evaluation.ids import evaluate_ids, print_cv_report, print_ids_report, recorded_cv
    from mlgate.settings import Settings
    from mlgate.training.common import DataError

    repo = repository or Settings().models.resolved_repository
    if not data and not show_cv:
        raise click.UsageError("give --data FILE (to score flows) and/or --cv")
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    if not data:
        try:
            found, cv = recorded_cv(repo, model=model, version=version)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        print_cv_report(model, found, cv, console)
        return
    try:
        result = evaluate_ids(repo, list(data), model=model, version=version, held_out=held_out)
    except DataError as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    print_ids_report(result, console)
    if show_cv:
        try:
            found, cv = recorded_cv(repo, model=model, version=result.version)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        print_cv_report(model, found, cv, console)


@eval_group.command("iot-cv")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=Path("data/skab"),
    show_default=True,
    help="SKAB data folder (valve1/ and other/ runs; anomaly-free/ for the FAR check).",
)
@click.option(
    "--sensors",
    type=click.Choice(["iot", "all"]),
    default="iot",
    show_default=True,
    help="iot: the five sensors of `iot`; all: the eight SKAB sensors.",
)
@click.option(
    "--far-budget",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="FAR the selection must keep on the training folds (default 0.15).",
)
def eval_iot_cv(data_dir: Path, sensors: str, far_budget: float | None) -> None:
    """Leave-runs-out cross-validation of the per-device detectors (offline, no server):
    per family of candidates (sensors x method) F1, FAR and MAR over the folds, and the
    recipe `mlgate train iot` ships (each run's first 400 readings calibrate)."""
    from dataclasses import replace

    from mlgate.training.common import DataError, make_progress
    from mlgate.training.iot import (
        ALL_COLUMNS,
        ALL_FEATURES,
        FEATURES,
        device_detector_for,
        load_skab,
    )
    from mlgate.training.iot_devices import DetectorSearch

    features = FEATURES if sensors == "iot" else ALL_FEATURES
    columns = tuple(f[1] for f in features)
    try:
        data = load_skab(data_dir, columns=columns if sensors == "iot" else ALL_COLUMNS)
    except DataError as exc:
        raise click.BadParameter(str(exc), param_hint="--data") from None
    search = DetectorSearch()
    if far_budget is not None:
        search = replace(search, far_budget=far_budget)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)
    with make_progress(console) as progress:
        task = progress.add_task("leave-runs-out CV", total=None, status="")
        detector = device_detector_for(data, features, search)
        progress.update(task, completed=1, total=1)
    print_detector_cv(detector, console)


def print_detector_cv(detector: dict[str, Any], console: Console) -> None:
    """The families table (mean ± std and min-max over folds) and the chosen recipe."""
    metrics = detector["metrics"]
    table = Table(title=metrics["protocol"], title_justify="left")
    for column in ("family", "F1", "F1 min-max", "FAR", "FAR min-max", "MAR"):
        table.add_column(column, justify="left" if column == "family" else "right")
    for name, row in metrics["families"].items():
        mark = " *" if name == metrics["family"] else ""
        table.add_row(
            name + mark,
            f"{row['f1']['mean']:.3f} ± {row['f1']['std']:.3f}",
            f"{row['f1']['min']:.3f}-{row['f1']['max']:.3f}",
            f"{row['far']['mean']:.3f} ± {row['far']['std']:.3f}",
            f"{row['far']['min']:.3f}-{row['far']['max']:.3f}",
            f"{row['mar']['mean']:.3f} ± {row['mar']['std']:.3f}",
        )
    console.print(table)
    params = ", ".join(f"{k}={v}" for k, v in detector["params"].items())
    console.print(f"* shipped: {metrics['family']} on {', '.join(detector['features'])}: {params}")
    normal = metrics.get("anomaly_free_run")
    if normal:
        console.print(
            f"anomaly-free run: FAR {normal['far_once']:.3f} calibrated once, "
            f"{normal['far_recalibrated']:.3f} recalibrated every window"
        )
