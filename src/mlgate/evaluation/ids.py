"""`mlgate eval ids`: score labelled CICFlowMeter flows with any version of `ids`.

The model is loaded from a repository exactly as the server loads it (manifest, checksum,
runtime) and scored through the server's data plane in-process, so the numbers are those
of what is served. With ``held_out=True`` only the
test split the version recorded at training is scored, which reproduces its manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from mlgate.dataplane import ClassificationOutput, InferenceContext
from mlgate.dataplane.service import local_dataplane
from mlgate.errors import MlgateError
from mlgate.protocols.matrix import MatrixCodec
from mlgate.registry.manifest import sha256_file
from mlgate.training.ids import held_out_report, load_ids_dataset, split_ids


@dataclass(frozen=True)
class IdsEvaluation:
    model: str
    version: str
    rows: int
    metrics: dict[str, Any]


def evaluate_ids(
    repository: Path,
    data: Sequence[Path],
    *,
    model: str = "ids",
    version: str | None = None,
    held_out: bool = False,
) -> IdsEvaluation:
    """Classify every flow of ``data`` and compare with its labels."""
    dataplane = local_dataplane(repository, default_model=model)
    try:
        mv = dataplane.resolve(model, version)
    except MlgateError as exc:
        raise ValueError(f"{exc.message}: {exc.details}") from None
    manifest = mv.manifest
    if manifest.task != "classification":
        raise ValueError(f"{model} is an {manifest.task} model; `eval ids` needs a classifier")
    dataset = load_ids_dataset(list(data))
    # Raw values: the manifest's rules replace the flow meter's NaN and Infinity cells.
    x, y = dataset.x, dataset.y
    if held_out and "cv" in manifest.metrics:
        raise ValueError(
            f"{model} version {mv.version} was trained on every flow of its data: it has "
            "no held-out split. Its cross-validated figures: mlgate eval ids --cv"
        )
    if held_out:
        recorded = {r["sha256"] for r in manifest.provenance.get("data", [])}
        given = {sha256_file(Path(p)) for p in data}
        if not recorded or given != recorded:
            raise ValueError(
                "--held-out needs exactly the data the version was trained on "
                f"(files with sha256 {sorted(recorded)})"
            )
        split = split_ids(y, int(manifest.provenance["seed"]))
        x, y = x[split.test], y[split.test]
    unknown = sorted(set(y.tolist()) - set(manifest.classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not classes of {model} ({manifest.classes})")
    # The server's own path: validation, the manifest's substitution rules, the runner.
    try:
        result = asyncio.run(
            dataplane.score(model, mv.version, x, MatrixCodec(), InferenceContext("local"))
        )
    except MlgateError as exc:
        raise ValueError(f"{exc.message}: {exc.details}") from None
    assert isinstance(result.output, ClassificationOutput)
    predicted = np.asarray(manifest.classes, dtype=object)[result.output.predicted]
    metrics = held_out_report(y, predicted, manifest.classes)
    metrics["split"] = "test" if held_out else "all rows given"
    return IdsEvaluation(model, mv.version, len(y), metrics)


def print_ids_report(result: IdsEvaluation, console: Console | None = None) -> None:
    """Per-class table, summary line and confusion matrix."""
    console = console or Console()
    metrics = result.metrics
    table = Table(
        title=f"{result.model} v{result.version}: {result.rows} flows", title_justify="left"
    )
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(
            name,
            f"{row['precision']:.4f}",
            f"{row['recall']:.4f}",
            f"{row['f1']:.4f}",
            str(row["support"]),
        )
    console.print(table)
    attack = metrics["attack_detection"]
    console.print(
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
        f"balanced accuracy {metrics['balanced_accuracy']:.4f}   "
        f"attack detection F1 {attack['f1']:.4f} (FAR {attack['false_alarm_rate']:.4f}, "
        f"MAR {attack['missed_alarm_rate']:.4f})"
    )
    matrix = metrics["confusion_matrix"]
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("")
    for label in matrix["labels"]:
        confusion.add_column(label[:10], justify="right")
    for label, row in zip(matrix["labels"], matrix["matrix"], strict=True):
        confusion.add_row(label, *(str(v) for v in row))
    console.print(confusion)


def recorded_cv(
    repository: Path, *, model: str = "ids", version: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The version's recorded cross-validation block (``metrics.cv``) and its version."""
    try:
        mv = local_dataplane(repository, default_model=model).resolve(model, version)
    except MlgateError as exc:
        raise ValueError(f"{exc.message}: {exc.details}") from None
    cv = mv.manifest.metrics.get("cv")
    if cv is None:
        raise ValueError(
            f"{model} version {mv.version} has no cross-validated figures (it was trained "
            "on a train/validation/test split: use --held-out)"
        )
    return mv.version, cv


def print_cv_report(
    model: str, version: str, cv: dict[str, Any], console: Console | None = None
) -> None:
    """Per-class F1 (mean ± std, min-max over the folds) and the macro-F1 line."""
    console = console or Console()
    table = Table(title=f"{model} v{version}: {cv['method']}", title_justify="left")
    for column in ("class", "F1 mean ± std", "F1 min-max", "precision", "recall", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in cv["per_class"].items():
        f1 = row["f1"]
        table.add_row(
            name,
            f"{f1['mean']:.4f} ± {f1['std']:.4f}",
            f"{f1['min']:.4f}-{f1['max']:.4f}",
            f"{row['precision']['mean']:.4f}",
            f"{row['recall']['mean']:.4f}",
            str(row["support"]),
        )
    console.print(table)
    f1, acc = cv["macro_f1"], cv["accuracy"]
    console.print(
        f"CV macro-F1 {f1['mean']:.4f} ± {f1['std']:.4f} (folds {f1['min']:.4f}-{f1['max']:.4f})"
        f"   accuracy {acc['mean']:.4f} ± {acc['std']:.4f}"
    )
    nested = cv.get("nested")
    if nested is not None:
        n = nested["macro_f1"]
        chosen = ", ".join(str(c) for c in nested["chosen_per_fold"])
        console.print(
            f"nested CV macro-F1 {n['mean']:.4f} ± {n['std']:.4f} "
            f"(folds {n['min']:.4f}-{n['max']:.4f}; chosen inside each fold: {chosen})"
        )
