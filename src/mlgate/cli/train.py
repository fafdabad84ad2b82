"""``mlgate train``: train the bundled model families into a model repository.

Attach to the main CLI with ``cli.add_command(train)``; also runnable on its own as
``python -m mlgate.cli.train``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import mlgate
from mlgate.registry.manifest import load_manifest
from mlgate.training.common import DataError, MissingDependencyError, VersionExistsError

DEFAULT_IDS_DATA = Path("data/cicids2017/original_format_sample/CICIDS2017_sample.csv")
DEFAULT_IOT_DATA = Path("data/skab")


def bundled_repository() -> Path:
    """The model repository shipped inside the package."""
    return Path(mlgate.__file__).parent / "bundled_models"


_repository_option = click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository to write into (default: the bundled models of the package).",
)
_version_option = click.option(
    "--version",
    "version",
    default=None,
    help="Version to write (default: one after the highest existing version).",
)
_seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the split and the models."
)
_force_option = click.option("--force", is_flag=True, help="Overwrite an existing version.")
_quiet_option = click.option("--quiet", "-q", is_flag=True, help="Do not show progress.")


def _progress_console(quiet: bool) -> Console:
    return Console(stderr=True, quiet=quiet)


def _run(func: Callable[..., Any], param_hint: str, *args: Any, **kwargs: Any) -> Any:
    """Call a trainer, turning problems the user can fix into usage errors (exit 2).

    A missing training dependency (``pip install 'mlgate[train]'``) exits 1 with its
    message.
    """
    try:
        return func(*args, **kwargs)
    except MissingDependencyError as exc:
        raise click.ClickException(str(exc)) from None
    except VersionExistsError as exc:
        raise click.UsageError(str(exc)) from None
    except DataError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _summary(version_dirs: Sequence[Path], columns: Sequence[tuple[str, str]]) -> None:
    """Print one row per model: version, held-out test metrics, path."""
    table = Table(title="Trained (metrics on the held-out test split)", title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("version")
    for header, _ in columns:
        table.add_column(header, justify="right")
    table.add_column("path", overflow="fold")
    for version_dir in version_dirs:
        manifest = load_manifest(version_dir)
        cells = [_fmt(manifest.metrics.get(key, "-")) for _, key in columns]
        table.add_row(manifest.name, manifest.version, *cells, _shown(version_dir))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # logs and pipes: do not squeeze the table
    console.print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """Train the bundled model families (ids, iot) on the data in ./data.

    The models are written as ONNX graphs (runtime onnx); training needs the train
    extra: pip install 'mlgate[train]'.
    """


@train.command("ids")
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(path_type=Path),
    help=f"CICIDS2017 CSV file(s), original column names (default: {DEFAULT_IDS_DATA}).",
)
@_repository_option
@_version_option
@_seed_option
@_force_option
@click.option(
    "--algorithm",
    type=click.Choice(["both", "gbt", "dqn"]),
    default="both",
    show_default=True,
    help="both: the gradient-boosted trees as VERSION and the DQN agent as VERSION+1, "
    "on the same folds, and `stable` set to the better by cross-validated macro-F1.",
)
@click.option(
    "--baseline",
    "baseline_version",
    default=None,
    help="With --algorithm dqn: the trees version of the same data to compare the agent "
    "with and to promote against (default: none).",
)
@click.option(
    "--folds",
    type=click.IntRange(2, 20),
    default=5,
    show_default=True,
    help="Stratified cross-validation folds (choose iterations/episodes, record figures).",
)
@click.option(
    "--episodes",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Cap on DQN training episodes (default 60; CV picks the count).",
)
@click.option(
    "--max-iter",
    type=click.IntRange(1, 5000),
    default=None,
    help="Cap on boosting iterations (default 500; CV picks the count).",
)
@_quiet_option
def ids_command(
    data: tuple[Path, ...],
    repository: Path | None,
    version: str | None,
    seed: int,
    force: bool,
    algorithm: str,
    baseline_version: str | None,
    folds: int,
    episodes: int | None,
    max_iter: int | None,
    quiet: bool,
) -> None:
    """Train the network-intrusion classifier `ids` (CICIDS2017) on every flow: a
    gradient-boosted model and a deep Q-learning agent, both chosen and measured by
    stratified cross-validation on the same folds."""
    from mlgate.training.ids import train_ids

    paths = list(data) or [DEFAULT_IDS_DATA]
    for path in paths:
        if not path.is_file():
            hint = " (run from the project root, or pass --data)" if not data else ""
            raise click.BadParameter(f"data file {path} does not exist{hint}.", param_hint="--data")
    repo = repository or bundled_repository()
    console = _progress_console(quiet)
    written: list[Path] = []
    baseline_dir: Path | None = None
    if baseline_version is not None:
        if algorithm != "dqn":
            raise click.UsageError("--baseline goes with --algorithm dqn")
        baseline_dir = repo / "ids" / baseline_version
        if not (baseline_dir / "manifest.yaml").is_file():
            raise click.BadParameter(f"{baseline_dir} is not a version", param_hint="--baseline")
    if algorithm in ("both", "gbt"):
        baseline_dir = _run(
            train_ids,
            "--data",
            paths,
            repo,
            version=version,
            seed=seed,
            force=force,
            console=console,
            folds=folds,
            **({"max_iter": max_iter} if max_iter is not None else {}),
        )
        written.append(baseline_dir)
    if algorithm in ("both", "dqn"):
        from mlgate.training.dqn import DQNConfig
        from mlgate.training.ids_dqn import promote_better, train_ids_dqn

        dqn_version = version
        if algorithm == "both" and version is not None:
            dqn_version = _following(version)
        config = (
            DQNConfig(seed=seed) if episodes is None else DQNConfig(episodes=episodes, seed=seed)
        )
        written.append(
            _run(
                train_ids_dqn,
                "--data",
                paths,
                repo,
                version=dqn_version,
                seed=seed,
                force=force,
                console=console,
                config=config,
                folds=folds,
                baseline_dir=baseline_dir,
            )
        )
        if baseline_dir is not None:
            stable = promote_better(repo, [baseline_dir, written[-1]])
            click.echo(f"ids: stable -> version {stable} (better CV macro-F1)", err=True)
    _ids_summary(written)


def _ids_summary(version_dirs: Sequence[Path]) -> None:
    """One row per version: CV macro-F1 (mean ± std, min-max), per-class F1, seconds."""
    table = Table(
        title="Trained on all rows (stratified cross-validation figures)", title_justify="left"
    )
    for column in ("model", "version", "algorithm", "CV macro-F1", "min-max", "per-class F1"):
        table.add_column(column, no_wrap=column != "per-class F1")
    table.add_column("seconds", justify="right")
    for version_dir in version_dirs:
        manifest = load_manifest(version_dir)
        cv = manifest.metrics["cv"]
        f1 = cv["macro_f1"]
        per_class = ", ".join(
            f"{c} {v['f1']['mean']:.3f}±{v['f1']['std']:.3f}" for c, v in cv["per_class"].items()
        )
        table.add_row(
            manifest.name,
            manifest.version,
            str(manifest.provenance.get("algorithm", "")).split(" (")[0],
            f"{f1['mean']:.4f} ± {f1['std']:.4f}",
            f"{f1['min']:.4f}-{f1['max']:.4f}",
            per_class,
            f"{manifest.provenance.get('training_seconds', 0):.0f}",
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(table)


def _following(version: str) -> str:
    if not version.isdigit():
        raise click.UsageError("with --algorithm both, --version must be an integer")
    return str(int(version) + 1)


@train.command("iot")
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    default=None,
    help=f"SKAB data directory (default: {DEFAULT_IOT_DATA}).",
)
@_repository_option
@_version_option
@_seed_option
@_force_option
@_quiet_option
def iot_command(
    data: Path | None,
    repository: Path | None,
    version: str | None,
    seed: int,
    force: bool,
    quiet: bool,
) -> None:
    """Train the IoT anomaly detectors and `iot` (SKAB pump sensors)."""
    from mlgate.training.iot import train_iot

    data_dir = data or DEFAULT_IOT_DATA
    if not data_dir.is_dir():
        hint = " (run from the project root, or pass --data)" if data is None else ""
        raise click.BadParameter(
            f"data directory {data_dir} does not exist{hint}.", param_hint="--data"
        )
    version_dirs = _run(
        train_iot,
        "--data",
        data_dir,
        repository or bundled_repository(),
        version=version,
        seed=seed,
        force=force,
        console=_progress_console(quiet),
    )
    _summary(
        version_dirs,
        [
            ("F1", "f1"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("FAR", "false_alarm_rate"),
            ("MAR", "missed_alarm_rate"),
        ],
    )


if __name__ == "__main__":
    train()
