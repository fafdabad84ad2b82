"""``mlgate predict``: score a CSV or Parquet file, in this process or through a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from mlgate.scoring.run import Summary
    from mlgate.scoring.scorers import Scorer

FORMATS = click.Choice(["auto", "csv", "parquet"])


class RowsPerSecond(ProgressColumn):
    """Rows scored so far and the rate (the bar itself may count bytes)."""

    def render(self, task: Task) -> Text:
        rows = int(task.fields.get("rows", 0))
        elapsed = task.elapsed or 0.0
        rate = f"{rows / elapsed:,.0f} rows/s" if elapsed > 0 and rows else "- rows/s"
        return Text(f"{rows:,} rows  {rate}", style="progress.data.speed")


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


@click.command("predict")
@click.option("--model", required=True, help="Model to score with, e.g. ids or iot.")
@click.option("--version", default=None, help="Version or alias (default: the model's stable).")
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="CSV or Parquet file with a header; columns named by feature name or alias.",
)
@click.option(
    "--output",
    "output",
    default=None,
    help="Where to write the scored rows (CSV or Parquet by suffix; '-': CSV on stdout). "
    "Default: no file, the summary only.",
)
@click.option("--input-format", type=FORMATS, default="auto", show_default=True)
@click.option("--output-format", type=FORMATS, default="auto", show_default=True)
@click.option("--delimiter", default=",", show_default=True, help="CSV field delimiter.")
@click.option(
    "--url",
    default=None,
    help="Score through this server (the Python client) instead of in this process.",
)
@click.option("--api-key", envvar="MLGATE_API_KEY", help="API key for --url (or MLGATE_API_KEY).")
@click.option(
    "--repository",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Model repository for scoring in this process (default: the configured one).",
)
@click.option(
    "--device-column",
    default=None,
    help="Column naming the device of each row (IoT): each device's rows, in file order, "
    "are scored against its own baseline (calibrated on its first readings).",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(1, 1_000_000),
    default=5000,
    show_default=True,
    help="Rows read and scored at a time (memory use follows it).",
)
@click.option(
    "--results-only", is_flag=True, help="Write only the result columns, not the input's."
)
@click.option(
    "--summary-json",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the summary as JSON to this file.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def predict(
    model: str,
    version: str | None,
    input_path: Path,
    output: str | None,
    input_format: str,
    output_format: str,
    delimiter: str,
    url: str | None,
    api_key: str | None,
    repository: Path | None,
    device_column: str | None,
    chunk_rows: int,
    results_only: bool,
    summary_json: Path | None,
    progress: bool,
) -> None:
    """Score every row of a file with a model and print a summary.

    In this process by default (the model repository is loaded as the server loads it:
    same validation and substitution rules), or through a running server with --url.
    Empty cells are missing values: the model's manifest decides what replaces them.
    """
    from mlgate.client import MlgateClientError
    from mlgate.scoring.run import FileScorer, FileScoringError
    from mlgate.scoring.scorers import ScoringError
    from mlgate.scoring.tables import TableError, detect_format, open_reader, open_writer

    to_stdout = output == "-"
    target = None if output is None or to_stdout else Path(output)
    in_format = detect_format(input_path, input_format)
    out_format = detect_format(target or "-", output_format)
    status = Console(stderr=True)
    try:
        scorer = _scorer(model, version, url, api_key, repository, device_column is not None)
    except ScoringError as exc:
        raise click.UsageError(exc.message) from None
    except MlgateClientError as exc:
        raise click.ClickException(f"{url}: {exc}") from None
    try:
        reader = open_reader(input_path, in_format, delimiter=delimiter)
        try:
            file_scorer = FileScorer(
                scorer, source=input_path, device_column=device_column, results_only=results_only
            )
            file_scorer.columns_for(reader.header)  # missing columns: fail before any output
            writer = open_writer(target, out_format) if output is not None else None
            try:
                summary = _run(file_scorer, reader, writer, chunk_rows, status, progress)
            finally:
                if writer is not None:
                    writer.close()
        finally:
            reader.close()
    except (FileScoringError, TableError) as exc:
        raise click.ClickException(str(exc)) from None
    except MlgateClientError as exc:
        raise click.ClickException(f"{url}: {exc}") from None
    finally:
        scorer.close()
    _print_summary(summary, Console(stderr=to_stdout))
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary.view(), indent=2) + "\n")


def _scorer(
    model: str,
    version: str | None,
    url: str | None,
    api_key: str | None,
    repository: Path | None,
    devices: bool,
) -> Scorer:
    from mlgate.scoring.scorers import LocalScorer, RemoteScorer

    if url is not None:
        from mlgate.client import Client, RetryPolicy

        # A file job outlives a burst of 429s: it waits for its row allowance to refill
        # (Retry-After) for up to ten minutes rather than failing halfway.
        patient = RetryPolicy(max_attempts=100, max_elapsed_s=600.0)
        client = Client(url, api_key=api_key, retry=patient)
        try:
            return RemoteScorer(client, model, version)
        except BaseException:
            client.close()
            raise
    from mlgate.settings import Settings

    settings = Settings()
    repo = repository or settings.models.resolved_repository
    return LocalScorer(
        repo,
        model,
        version,
        devices=devices,
        baseline_readings=settings.devices.baseline_readings,
    )


def _run(
    file_scorer: Any, reader: Any, writer: Any, chunk_rows: int, status: Console, show: bool
) -> Summary:
    schema = file_scorer.scorer.schema
    where = "remote" if type(file_scorer.scorer).__name__ == "RemoteScorer" else "local"
    label = f"{schema.model} v{schema.version} ({where})"
    if not show:
        result: Summary = file_scorer.run(reader, writer, chunk_rows=chunk_rows)
        return result
    with make_progress(status) as bar:
        by_bytes = reader.total_rows is None
        total = reader.total_bytes if by_bytes else reader.total_rows
        task = bar.add_task(label, total=total, rows=0)
        rows = 0

        def advance(n: int) -> None:
            nonlocal rows
            rows += n
            done = reader.bytes_read if by_bytes else rows
            bar.update(task, completed=done, rows=rows)

        result = file_scorer.run(reader, writer, chunk_rows=chunk_rows, advance=advance)
        bar.update(task, completed=total, rows=rows)
        return result


def _print_summary(summary: Summary, console: Console) -> None:
    view = summary.view()
    rate = view["rows_per_second"]
    console.print(
        f"{view['model']} v{view['version']}: {view['rows']:,} rows in "
        f"{view['seconds']:.2f} s" + (f" ({rate:,.0f} rows/s)" if rate else ""),
        soft_wrap=True,
    )
    rows = max(view["rows"], 1)
    if "class_counts" in view:
        table = Table(title="predicted classes", title_justify="left")
        table.add_column("class")
        table.add_column("rows", justify="right")
        table.add_column("share", justify="right")
        for name, count in view["class_counts"].items():
            table.add_row(name, f"{count:,}", f"{count / rows:.1%}")
        console.print(table)
        console.print(
            f"attacks: {view['attacks']:,} (attack rate {view['attack_rate']:.2%})",
            soft_wrap=True,
        )
    else:
        calibrating = view.get("calibrating", 0)
        line = f"anomalies: {view['anomalies']:,} (anomaly rate {view['anomaly_rate']:.2%}"
        line += f" of {view['rows'] - calibrating:,} scored rows)"
        if calibrating:
            line += f"; {calibrating:,} rows calibrated device baselines"
        console.print(line, soft_wrap=True)
