"""Helpers shared by the training pipelines.

Reading CSV files (the :mod:`csv` module plus numpy, no pandas), a seeded stratified
split, metrics, per-feature reference statistics, a rich progress display, and writing
a version directory (ONNX artifact + ``manifest.yaml``) into a model repository.
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

import mlgate
from mlgate.drift.reference import bin_shares
from mlgate.registry.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    NAME_PATTERN,
    VERSION_PATTERN,
    Manifest,
    ModelFile,
    sha256_file,
)
from mlgate.registry.runtimes import Runtime, load_runtime

#: Standard deviations below this are floored, so z-scores never divide by zero.
STD_EPSILON = 1e-6
#: Quantiles stored in ``reference.quantiles``.
REFERENCE_QUANTILES = {"p01": 0.01, "p50": 0.50, "p99": 0.99}
#: File name of the ONNX artifacts.
ONNX_ARTIFACT = "model.onnx"


class DataError(ValueError):
    """Training data is missing or malformed; the message says what to do."""


class VersionExistsError(ValueError):
    """The version directory to write already exists and ``force`` was not given."""


class MissingDependencyError(ImportError):
    """A package needed for training only (the ``train`` extra) is not installed."""


# --------------------------------------------------------------------------- CSV input


@dataclass(frozen=True)
class Table:
    """A CSV file as read: stripped header names and the data rows as strings."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    rows_in_file: int

    def column_index(self, columns: Sequence[str], *, hint: str = "") -> list[int]:
        """Positions of ``columns`` in the header; a :class:`DataError` lists what's missing."""
        positions = {name: i for i, name in enumerate(self.header)}
        missing = [c for c in columns if c not in positions]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:8]) + (" …" if len(missing) > 8 else "")
            found = ", ".join(repr(c) for c in self.header[:8]) + (
                " …" if len(self.header) > 8 else ""
            )
            raise DataError(
                f"{self.path}: missing {len(missing)} required column(s): {shown}. "
                f"The file has {len(self.header)} columns ({found}). {hint}".rstrip()
            )
        return [positions[c] for c in columns]

    def float_matrix(self, columns: Sequence[str], *, hint: str = "") -> np.ndarray:
        """The named columns as a float64 matrix; empty cells become NaN.

        ``inf``/``-inf``/``nan`` spellings are parsed as such (callers decide how to clean).
        """
        index = self.column_index(columns, hint=hint)
        out = np.empty((len(self.rows), len(index)), dtype=np.float64)
        for i, row in enumerate(self.rows):
            for k, j in enumerate(index):
                cell = row[j].strip()
                if not cell:
                    out[i, k] = np.nan
                    continue
                try:
                    out[i, k] = float(cell)
                except ValueError:
                    raise DataError(
                        f"{self.path}: data row {i + 1}, column {columns[k]!r}: "
                        f"{cell!r} is not a number. Fix or remove that row."
                    ) from None
        return out

    def string_column(self, column: str, *, hint: str = "") -> np.ndarray:
        (j,) = self.column_index([column], hint=hint)
        return np.array([row[j].strip() for row in self.rows], dtype=object)


def read_csv(
    path: Path,
    *,
    delimiter: str = ",",
    max_rows: int | None = None,
    what: str = "data file",
    hint: str = "",
) -> Table:
    """Read a CSV file with a header row.

    Header names are stripped (the original CICIDS2017 files have leading spaces), a
    UTF-8 BOM is ignored, blank lines are skipped, and every row must have as many cells
    as the header. ``max_rows`` keeps the first rows only (``rows_in_file`` still counts
    all of them).
    """
    path = Path(path)
    if not path.is_file():
        where = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{what} {path} {where}. {hint}".rstrip())
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{what} {path} is empty: expected a header row. {hint}".rstrip())
            header = [h.strip() for h in header]
            rows: list[list[str]] = []
            count = 0
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path}, line {reader.line_num}: {len(row)} cells but the header "
                        f"has {len(header)} (is the delimiter {delimiter!r} right?)"
                    )
                count += 1
                if max_rows is None or len(rows) < max_rows:
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 text file: {exc}") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV file: {exc}") from None
    if not rows:
        raise DataError(f"{what} {path} has a header but no data rows. {hint}".rstrip())
    return Table(path, header, rows, count)


def file_record(path: Path, rows_in_file: int, rows_used: int) -> dict[str, Any]:
    """Provenance of one input file: name, path, sha256, rows."""
    path = Path(path)
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = path.name
    return {
        "file": path.name,
        "path": shown,
        "sha256": sha256_file(path),
        "rows": rows_in_file,
        "rows_used": rows_used,
    }


def evenly_spaced(n: int, keep: int | None) -> np.ndarray:
    """Indices of at most ``keep`` of ``n`` rows, evenly spaced (all rows if keep is None)."""
    if keep is None or keep >= n:
        return np.arange(n)
    if keep < 1:
        raise ValueError("the number of rows to keep must be at least 1")
    return np.unique(np.linspace(0, n - 1, keep).round().astype(np.int64))


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class Split:
    """Row indices of the train, validation and test parts (each sorted ascending)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 0
) -> Split:
    """Seeded, stratified train/validation/test split.

    Per class (in sorted class order) the rows are shuffled with one
    ``numpy.random.default_rng(seed)`` stream; validation and test each get
    ``round(n * fraction)`` rows, at least one if the class has three rows or more, and
    train gets the rest. The same ``y`` and seed always give the same split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError("fractions must be three non-negative numbers summing to 1")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in sorted(set(y.tolist())):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n = len(idx)
        n_val = n_test = 0
        if n >= 3:
            n_val = max(1, round(n * fractions[1]))
            n_test = max(1, round(n * fractions[2]))
            while n - n_val - n_test < 1:
                if n_val >= n_test:
                    n_val -= 1
                else:
                    n_test -= 1
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
        parts[0].append(idx[n_val + n_test :])
    train, val, test = (
        np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts
    )
    return Split(train, val, test)


# --------------------------------------------------------------------------- metrics


def _r(value: float) -> float:
    return round(float(value), 6)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, balanced accuracy, per-class P/R/F1, confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    weights = support / max(1, support.sum())
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "rows": len(y_true),
        "accuracy": _r(accuracy_score(y_true, y_pred)),
        # Macro averages over the classes present in y_true (absent ones carry no signal).
        "macro_f1": _r(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": _r((f1 * weights).sum()),
        "balanced_accuracy": _r(recall[present].mean()) if present.any() else 0.0,
        "per_class": {
            c: {
                "precision": _r(precision[i]),
                "recall": _r(recall[i]),
                "f1": _r(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": labels,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": matrix.astype(int).tolist(),
        },
    }


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Detection metrics for 0/1 labels: precision, recall, F1, FAR, MAR and the counts.

    FAR (false alarm rate) = FP / (FP + TN); MAR (missed alarm rate) = FN / (FN + TP).
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    tn = int(np.sum(~t & ~p))
    fn = int(np.sum(t & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "rows": len(t),
        "anomalies": int(t.sum()),
        "anomaly_share": _r(t.mean()) if len(t) else 0.0,
        "alarm_share": _r(p.mean()) if len(p) else 0.0,
        "precision": _r(precision),
        "recall": _r(recall),
        "f1": _r(f1),
        "false_alarm_rate": _r(fp / (fp + tn)) if fp + tn else 0.0,
        "missed_alarm_rate": _r(fn / (fn + tp)) if fn + tp else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve, or None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(int)
    if y.min() == y.max():
        return None
    return _r(roc_auc_score(y, scores))


def best_f1_threshold(scores: np.ndarray, y_true: np.ndarray) -> tuple[float, float]:
    """The threshold (``score >= threshold`` => anomaly) that maximises F1, and that F1.

    Every distinct score is a candidate cut. Ties in F1 go to the highest threshold
    (fewest alarms). The returned threshold lies halfway between the chosen score and
    the next lower distinct score, so that recomputing the same scores with tiny
    floating-point differences does not move rows across it.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(y_true).astype(bool)
    if len(s) == 0 or not t.any():
        raise DataError("threshold calibration needs validation rows with anomalies")
    order = np.argsort(-s, kind="stable")
    s_sorted, t_sorted = s[order], t[order]
    tp = np.cumsum(t_sorted)
    fp = np.cumsum(~t_sorted)
    # Cut after the last occurrence of each distinct score value.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp, fp = tp[last], fp[last]
    positives = t.sum()
    f1 = 2 * tp / (tp + fp + positives)
    best = int(np.argmax(f1))  # first maximum = highest threshold
    chosen = s_sorted[last[best]]
    lower = s_sorted[last[best] + 1] if last[best] + 1 < len(s_sorted) else None
    threshold = chosen if lower is None else chosen - (chosen - lower) / 2
    if not threshold <= chosen or (lower is not None and not threshold > lower):
        threshold = chosen  # the two scores are adjacent floats
    return float(threshold), float(f1[best])


def robust_scale(values: np.ndarray) -> float:
    """A positive spread of ``values``: the IQR, else the std, else 1."""
    v = np.asarray(values, dtype=np.float64)
    if len(v):
        q75, q25 = np.percentile(v, [75, 25])
        if q75 - q25 > 0:
            return float(q75 - q25)
        if v.std() > 0:
            return float(v.std())
    return 1.0


def reference_stats(x: np.ndarray) -> dict[str, Any]:
    """Per-feature mean, std (floored at :data:`STD_EPSILON`) and quantiles of ``x``, and
    the share of ``x`` in each bin the quantiles cut (the baseline of input drift)."""
    x = np.asarray(x, dtype=np.float64)
    quantiles = {
        name: [float(v) for v in np.quantile(x, q, axis=0)]
        for name, q in REFERENCE_QUANTILES.items()
    }
    return {
        "mean": [float(v) for v in x.mean(axis=0)],
        "std": [float(v) for v in np.maximum(x.std(axis=0), STD_EPSILON)],
        "quantiles": quantiles,
        "bin_shares": bin_shares(x, quantiles),
    }


# --------------------------------------------------------------------------- environment


def environment() -> dict[str, str]:
    """Versions of the code and libraries a model was trained and exported with."""
    import onnx
    import onnxruntime
    import sklearn

    return {
        "code_version": mlgate.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect warnings raised inside the block (as messages) instead of raising them.

    Training records them in the provenance so that nothing is silently lost, while a
    caller running with warnings as errors (the test suite) is not interrupted.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    seen: set[str] = set()
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.add(text)
            messages.append(text)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Limit OpenMP/BLAS to one thread: faster (and steadier) on these small data sets."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# --------------------------------------------------------------------------- progress


def make_console(console: Console | None) -> Console:
    """The console to show progress on: the given one, else a new one on stderr."""
    return console if console is not None else Console(stderr=True)


def make_progress(console: Console | None) -> Progress:
    """A rich progress display; tasks take a ``status`` field shown after the bar."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=make_console(console),
    )


# --------------------------------------------------------------------------- repository


def _version_dirs(model_dir: Path) -> list[str]:
    if not model_dir.is_dir():
        return []
    return [p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]


def next_version(repository: Path, names: Sequence[str]) -> str:
    """One integer version after the highest existing one among ``names`` ("1" if none).

    Several names (the IoT detectors) get the same next version, so that models trained
    together share their version number.
    """
    highest = 0
    for name in names:
        for v in _version_dirs(Path(repository) / name):
            highest = max(highest, int(v))
    return str(highest + 1)


def resolve_version(
    repository: Path, names: Sequence[str], version: str | None, *, force: bool
) -> str:
    """Validate or pick the version to write; refuse to overwrite unless ``force``."""
    import re

    if version is None:
        version = next_version(repository, names)
    version = str(version)
    if not re.match(VERSION_PATTERN, version):
        raise ValueError(
            f"bad version {version!r}: use an integer such as 1, 2, … (letters, digits, "
            "'.', '_' and '-' are allowed, starting with a letter or digit)"
        )
    for name in names:
        if not re.match(NAME_PATTERN, name):
            raise ValueError(f"bad model name {name!r}")
        target = Path(repository) / name / version
        if target.exists() and not force:
            raise VersionExistsError(
                f"{target} already exists. Choose another version (omit it to get the "
                "next free one) or pass force=True / --force to overwrite it."
            )
    return version


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def write_version(
    repository: Path,
    manifest: dict[str, Any],
    *,
    onnx_model: Any = None,
    artifact_file: Path | None = None,
    artifact_name: str = ONNX_ARTIFACT,
    force: bool = False,
    model_description: str = "",
    extra_files: dict[str, bytes] | None = None,
) -> tuple[Path, Manifest, Runtime]:
    """Write ``<repository>/<name>/<version>/`` with the artifact and ``manifest.yaml``.

    Either ``onnx_model`` (an ``onnx.ModelProto``, serialised) or ``artifact_file``
    (copied byte for byte) gives the artifact; ``extra_files`` (name -> bytes) are
    written beside it (e.g. the explainer, whose sha256 the manifest already holds).
    ``artifact``, ``artifact_sha256`` and
    ``created_at`` are filled in; the manifest is validated and the artifact is loaded
    back with its runtime before the version appears. The directory is built under a
    hidden temporary name and ``manifest.yaml`` is renamed into place last, so a server
    scanning the repository never sees a half-written version. If ``<name>/model.yaml`` does not
    exist it is created with ``description`` and ``aliases: {stable: <version>}``;
    an existing one is left alone (promotion is a deliberate act).

    Returns the version directory, the validated manifest and the loaded runtime.
    """
    if (onnx_model is None) == (artifact_file is None):
        raise ValueError("pass exactly one of onnx_model or artifact_file")
    name, version = str(manifest["name"]), str(manifest["version"])
    model_dir = Path(repository) / name
    final = model_dir / version
    if final.exists() and not force:
        raise VersionExistsError(
            f"{final} already exists. Choose another version or pass force=True / --force."
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = model_dir / f".{version}.tmp-{token}"
    tmp.mkdir()
    try:
        artifact_path = tmp / artifact_name
        if onnx_model is not None:
            artifact_path.write_bytes(onnx_model.SerializeToString())
        else:
            assert artifact_file is not None
            shutil.copyfile(artifact_file, artifact_path)
        for extra, payload in (extra_files or {}).items():
            if Path(extra).name != extra or extra in (artifact_name, MANIFEST_FILE):
                raise ValueError(f"bad extra file name {extra!r}")
            (tmp / extra).write_bytes(payload)
        data = dict(manifest)
        data["artifact"] = artifact_name
        data["artifact_sha256"] = sha256_file(artifact_path)
        data["created_at"] = _now()
        validated = Manifest.model_validate(data)
        runtime = load_runtime(tmp, validated)
        staged = tmp / (MANIFEST_FILE + ".tmp")
        staged.write_text(validated.to_yaml(), encoding="utf-8")
        if final.exists():
            old = model_dir / f".{version}.old-{token}"
            (final / MANIFEST_FILE).unlink(missing_ok=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        os.replace(final / (MANIFEST_FILE + ".tmp"), final / MANIFEST_FILE)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    model_file = model_dir / MODEL_FILE
    if not model_file.exists():
        settings = ModelFile(description=model_description, aliases={"stable": version})
        text = _yaml_dump(settings.model_dump(mode="json"))
        model_file.write_text(text, encoding="utf-8")
    return final, validated, runtime


def _yaml_dump(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
