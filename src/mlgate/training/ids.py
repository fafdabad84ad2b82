"""Training of the ``ids`` model: a network-intrusion classifier on CICIDS2017 flows.

Input: CICFlowMeter flow records in the original CICIDS2017 ``MachineLearningCVE``
column names (77 features, ``Destination Port`` absent) plus ``Label`` with the grouped
classes BENIGN, Bot, BruteForce, DoS, Infiltration, PortScan, WebAttack. BENIGN is the
only non-attack class.

Model: a :class:`~sklearn.ensemble.HistGradientBoostingClassifier` with balanced class
weights (BENIGN and Infiltration are rare in the sample), trained on every row given.
The number of boosting iterations is chosen by stratified k-fold cross-validation
(:mod:`mlgate.training.cv`): each fold's model is fitted once and its staged
predictions score every iteration count; the count with the best mean macro-F1 wins.
The manifest records the cross-validated figures (per fold, per class, with spreads);
the owners' held-out flows are not in this repository.

Serving: the fitted model is exported to an ONNX graph with float64 input
(:func:`mlgate.training.onnx_export.hist_gradient_boosting_to_onnx`) and served by
onnxruntime; training fails unless the graph reproduces ``predict_proba`` on every row
(max absolute difference within :data:`PROBA_ATOL`, the same predicted class
everywhere). Beside it goes ``explainer.npz``, the trees as plain arrays with their node
covers, for exact TreeSHAP (:mod:`mlgate.explain`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from mlgate.training.common import (
    DataError,
    Split,
    binary_metrics,
    captured_warnings,
    classification_metrics,
    environment,
    file_record,
    make_progress,
    read_csv,
    reference_stats,
    resolve_version,
    single_threaded,
    stratified_split,
    write_version,
)
from mlgate.training.cv import (
    DEFAULT_FOLDS,
    cv_report,
    fold_macro_f1,
    nested_selection,
    spread,
    stratified_folds,
)
from mlgate.training.onnx_export import (
    PROBABILITIES,
    ExportMismatchError,
    compare_outputs,
    graph_summary,
    hist_gradient_boosting_to_onnx,
    require_onnx,
    run_onnx,
)

MODEL_NAME = "ids"
LABEL_COLUMN = "Label"
BENIGN = "BENIGN"
DEFAULT_DATA = Path("data/cicids2017/original_format_sample/CICIDS2017_sample.csv")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

#: Cleaning rule (see :func:`clean_features`).
NAN_FILL = 0.0
INF_SENTINEL = -1.0

#: Boosting schedule: the iteration count (a multiple of STEP, at most MAX_ITER) with the
#: best mean cross-validated macro-F1. The other parameters were compared the same way
#: (see the README: learning rate 0.1 with 15 leaves scored lower).
MAX_ITER = 500
STEP = 25
HGB_PARAMS: dict[str, Any] = {
    "loss": "log_loss",
    "learning_rate": 0.05,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 5,
    "l2_regularization": 1.0,
    "class_weight": "balanced",
    "early_stopping": False,
}
#: Largest allowed |ONNX - scikit-learn| of a class probability (float64 graphs: ~1e-15).
PROBA_ATOL = 1e-9

#: The 77 CICFlowMeter features, in the order of the CICIDS2017 sample file.
FEATURE_COLUMNS: tuple[str, ...] = (
    "Flow Duration",
    "Total Fwd Packets",
    "Total Backward Packets",
    "Total Length of Fwd Packets",
    "Total Length of Bwd Packets",
    "Fwd Packet Length Max",
    "Fwd Packet Length Min",
    "Fwd Packet Length Mean",
    "Fwd Packet Length Std",
    "Bwd Packet Length Max",
    "Bwd Packet Length Min",
    "Bwd Packet Length Mean",
    "Bwd Packet Length Std",
    "Flow Bytes/s",
    "Flow Packets/s",
    "Flow IAT Mean",
    "Flow IAT Std",
    "Flow IAT Max",
    "Flow IAT Min",
    "Fwd IAT Total",
    "Fwd IAT Mean",
    "Fwd IAT Std",
    "Fwd IAT Max",
    "Fwd IAT Min",
    "Bwd IAT Total",
    "Bwd IAT Mean",
    "Bwd IAT Std",
    "Bwd IAT Max",
    "Bwd IAT Min",
    "Fwd PSH Flags",
    "Bwd PSH Flags",
    "Fwd URG Flags",
    "Bwd URG Flags",
    "Fwd Header Length",
    "Bwd Header Length",
    "Fwd Packets/s",
    "Bwd Packets/s",
    "Min Packet Length",
    "Max Packet Length",
    "Packet Length Mean",
    "Packet Length Std",
    "Packet Length Variance",
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
    "CWE Flag Count",
    "ECE Flag Count",
    "Down/Up Ratio",
    "Average Packet Size",
    "Avg Fwd Segment Size",
    "Avg Bwd Segment Size",
    "Fwd Header Length.1",
    "Fwd Avg Bytes/Bulk",
    "Fwd Avg Packets/Bulk",
    "Fwd Avg Bulk Rate",
    "Bwd Avg Bytes/Bulk",
    "Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate",
    "Subflow Fwd Packets",
    "Subflow Fwd Bytes",
    "Subflow Bwd Packets",
    "Subflow Bwd Bytes",
    "Init_Win_bytes_forward",
    "Init_Win_bytes_backward",
    "act_data_pkt_fwd",
    "min_seg_size_forward",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
)

# Names that are already snake_case get their CICFlowMeter-V4 spelling as the alias.
_ALIAS_OVERRIDES = {
    "act_data_pkt_fwd": "fwd_act_data_pkts",
    "min_seg_size_forward": "fwd_seg_size_min",
    "Down/Up Ratio": "down_up_ratio",
}

_RATE_NOTE = (
    "CICFlowMeter reports Infinity when Flow Duration is 0 (and leaves the cell empty or "
    f"NaN for 0/0): the server replaces Infinity by {INF_SENTINEL:g} and a missing value "
    f"by {NAN_FILL:g}, as training did, and reports the substitution."
)
#: Features where the flow meter itself writes non-finite values; the manifest declares
#: the cleaning rule for them, so the server applies it to raw flow-meter output.
RAW_NON_FINITE_FEATURES = ("Flow Bytes/s", "Flow Packets/s")
_DESCRIPTIONS = {
    "Flow Duration": "Duration of the flow.",
    "Flow Bytes/s": "Bytes per second over the flow. " + _RATE_NOTE,
    "Flow Packets/s": "Packets per second over the flow. " + _RATE_NOTE,
    "Fwd Header Length.1": "Duplicate of Fwd Header Length in the CICIDS2017 files.",
    "Init_Win_bytes_forward": "Initial TCP window of the forward direction (-1: none).",
    "Init_Win_bytes_backward": "Initial TCP window of the backward direction (-1: none).",
    "act_data_pkt_fwd": "Forward packets with at least 1 byte of TCP payload.",
    "min_seg_size_forward": "Minimum segment size seen in the forward direction.",
}

CLEANING_RULE = (
    f"NaN or empty -> {NAN_FILL:g}; +Infinity and -Infinity -> {INF_SENTINEL:g} "
    "(sentinel, as CICFlowMeter users do for Flow Bytes/s and Flow Packets/s of "
    "zero-duration flows); every other value unchanged"
)

DATA_HINT = (
    "Expected the CICIDS2017 sample with the original MachineLearningCVE column names, "
    f"e.g. {DEFAULT_DATA} (see data/cicids2017/PROVENANCE.md); run from the project "
    "root or pass --data."
)


def snake_alias(name: str) -> str:
    """The snake_case alias of a CICIDS2017 column name.

    ``Flow Bytes/s`` -> ``flow_bytes_per_s``, ``Fwd Header Length.1`` ->
    ``fwd_header_length_1``; names that are already snake_case get their
    CICFlowMeter-V4 spelling (``act_data_pkt_fwd`` -> ``fwd_act_data_pkts``) so that the
    alias differs from the name.
    """
    if name in _ALIAS_OVERRIDES:
        return _ALIAS_OVERRIDES[name]
    text = name.replace("/", " per ").replace(".", " ")
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _unit(name: str) -> str | None:
    if name == "Flow Bytes/s":
        return "bytes/s"
    if name.endswith("Packets/s"):
        return "packets/s"
    if any(k in name for k in ("Duration", "IAT", "Active", "Idle")):
        return "microseconds"
    if name.endswith("Bulk Rate"):
        return "bytes/s"
    if "Packets/Bulk" in name:
        return "packets"
    if any(k in name for k in ("Length", "Size", "Bytes", "Init_Win", "seg_size")):
        if "Variance" in name:
            return "bytes^2"
        return "bytes"
    if name.startswith(("Total", "Subflow")) and "Packets" in name:
        return "packets"
    if "Flag" in name or name == "act_data_pkt_fwd":
        return "count" if "Count" in name or name == "act_data_pkt_fwd" else "flag"
    return None


def feature_specs() -> list[dict[str, Any]]:
    """The manifest ``features`` entries: name, one snake_case alias, description, unit."""
    specs = []
    for name in FEATURE_COLUMNS:
        spec: dict[str, Any] = {"name": name, "aliases": [snake_alias(name)]}
        spec["description"] = _DESCRIPTIONS.get(name, f"CICFlowMeter feature {name!r}.")
        unit = _unit(name)
        if unit is not None:
            spec["unit"] = unit
        if name in RAW_NON_FINITE_FEATURES:
            spec["missing_value"] = NAN_FILL
            spec["infinite_value"] = INF_SENTINEL
        specs.append(spec)
    return specs


def clean_features(x: np.ndarray) -> np.ndarray:
    """Replace non-finite values by fixed numbers; the same rule every time.

    - NaN (and empty cells, read as NaN) -> ``0``;
    - ``+inf`` and ``-inf`` -> ``-1``, a sentinel outside the range of the rate
      features where CICFlowMeter produces Infinity (``Flow Bytes/s`` and
      ``Flow Packets/s`` of flows with ``Flow Duration`` 0).

    The rule uses no statistic of the data, so training, evaluation and clients apply
    exactly the same mapping. Finite values are returned unchanged (as float64, in a
    new array). At serving time the manifest declares this rule for the rate features
    (:data:`RAW_NON_FINITE_FEATURES`) and the server applies it; a non-finite value of
    any other feature is refused.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    out[np.isnan(out)] = NAN_FILL
    out[np.isinf(out)] = INF_SENTINEL
    return out


@dataclass(frozen=True)
class IdsDataset:
    """Raw (uncleaned) features in :data:`FEATURE_COLUMNS` order, labels, file records."""

    x: np.ndarray
    y: np.ndarray
    files: list[dict[str, Any]]


def load_ids_dataset(paths: Sequence[Path], *, max_rows: int | None = None) -> IdsDataset:
    """Read one or more CICIDS2017 CSV files (columns picked by name).

    ``max_rows`` keeps the first rows only, over the files in the given order (the sample
    file is shuffled, so its first rows are a fair slice). Extra columns are ignored.
    """
    if not paths:
        raise DataError(f"no data files given. {DATA_HINT}")
    if max_rows is not None and max_rows < 10:
        raise ValueError("max_rows must be at least 10")
    xs, ys, files = [], [], []
    remaining = max_rows
    for path in paths:
        if remaining is not None and remaining <= 0:
            break
        table = read_csv(Path(path), max_rows=remaining, what="CICIDS2017 file", hint=DATA_HINT)
        x = table.float_matrix(FEATURE_COLUMNS, hint=DATA_HINT)
        y = table.string_column(LABEL_COLUMN, hint=DATA_HINT)
        if any(label == "" for label in y):
            raise DataError(f"{path}: some rows have an empty {LABEL_COLUMN!r}; fix them.")
        xs.append(x)
        ys.append(y)
        files.append(file_record(Path(path), table.rows_in_file, len(y)))
        if remaining is not None:
            remaining -= len(y)
    y_all = np.concatenate(ys).astype(str)
    if len(set(y_all.tolist())) < 2:
        raise DataError(f"the data has a single class ({y_all[0]!r}); a classifier needs two.")
    return IdsDataset(np.vstack(xs), y_all, files)


def split_ids(y: np.ndarray, seed: int) -> Split:
    """The train/validation/test split (stratified 70/15/15) that versions 1 and 2 were
    trained on; ``mlgate eval ids --held-out`` scores their test part."""
    return stratified_split(y, SPLIT_FRACTIONS, seed)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    labels = sorted(set(y_true.tolist()))
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def _new_model(seed: int, max_iter: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**HGB_PARAMS, random_state=seed, max_iter=max_iter)


def choose_iterations(
    x: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    *,
    seed: int,
    max_iter: int,
    console: Console | None,
) -> tuple[int, list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    """Boosting iterations with the best mean cross-validated macro-F1.

    Every fold's model is fitted once with ``max_iter`` iterations; its staged
    predictions give the test rows' classes after every :data:`STEP` iterations. Returns
    the chosen count (ties: fewer), the curve, the out-of-fold predictions at it, and
    the nested figure (:func:`~mlgate.training.cv.nested_selection`).
    """
    steps = sorted({*range(STEP, max_iter + 1, STEP), max_iter})
    predicted = {s: np.empty(len(y), dtype=object) for s in steps}
    with make_progress(console) as progress:
        task = progress.add_task("ids (trees, CV)", total=len(folds), status="")
        for k, (train, test) in enumerate(folds, 1):
            model = _new_model(seed, max_iter).fit(x[train], y[train])
            for iterations, p in enumerate(model.staged_predict(x[test]), 1):
                if iterations in predicted:
                    predicted[iterations][test] = p
            progress.update(task, advance=1, status=f"fold {k}/{len(folds)}")
    curve, by_step = [], []
    for s in steps:
        scores = fold_macro_f1(y, folds, predicted[s])
        by_step.append(scores)
        curve.append({"iterations": s, **spread(scores)})
    best = max(curve, key=lambda c: (c["mean"], -c["iterations"]))
    nested = nested_selection(np.transpose(by_step), steps, what="boosting iterations")
    return int(best["iterations"]), curve, predicted[int(best["iterations"])], nested


def held_out_report(
    y_true: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Per-class metrics, and attack (any class but BENIGN) vs BENIGN detection."""
    report: dict[str, Any] = {"split": "test"}
    report.update(classification_metrics(y_true, predicted, classes))
    if BENIGN in classes:
        detection = binary_metrics(y_true != BENIGN, predicted != BENIGN)
        report["attack_detection"] = {
            "note": "attack (any class but BENIGN) vs BENIGN, from the predicted class",
            **{
                k: detection[k]
                for k in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")
            },
        }
    return report


def classifier_manifest(
    version: str,
    description: str,
    classes: list[str],
    x_train: np.ndarray,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    explainer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of an ``ids`` version (ONNX graph with a ``probabilities`` output)."""
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "runtime": "onnx",
        "task": "classification",
        "description": description,
        "features": feature_specs(),
        "classes": classes,
        "attack_classes": [c for c in classes if c != BENIGN],
        "runtime_options": {"output": PROBABILITIES},
        "reference": reference_stats(x_train),
        "metrics": metrics,
        "provenance": provenance,
    }
    if explainer is not None:
        manifest["explainer"] = explainer
    return manifest


def data_provenance(dataset: IdsDataset, max_rows: int | None) -> dict[str, Any]:
    """What both ``ids`` trainers record about the data."""
    classes = sorted(set(dataset.y.tolist()))
    return {
        "dataset": (
            "CICIDS2017 (Canadian Institute for Cybersecurity, UNB), sample with the "
            "original column names and grouped labels; see data/cicids2017/PROVENANCE.md"
        ),
        "citation": (
            "I. Sharafaldin, A. H. Lashkari, A. A. Ghorbani, Toward Generating a New "
            "Intrusion Detection Dataset and Intrusion Traffic Characterization, "
            "ICISSP 2018"
        ),
        "data": dataset.files,
        "rows_used": len(dataset.y),
        "max_rows": max_rows,
        "label_column": LABEL_COLUMN,
        "class_counts": {c: int(np.sum(dataset.y == c)) for c in classes},
        "cleaning": CLEANING_RULE,
    }


def explainer_record(kind: str, payload: bytes, output: str, reference: str) -> dict[str, Any]:
    """The manifest's ``explainer`` entry for an ``explainer.npz`` payload."""
    import hashlib

    from mlgate.explain import EXPLAINER_FILE

    return {
        "kind": kind,
        "file": EXPLAINER_FILE,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "output": output,
        "reference": reference,
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as a compressed ``.npz`` (numeric arrays only: loads without pickle)."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def train_ids(
    data: Sequence[Path],
    repository: Path,
    *,
    version: str | None = None,
    seed: int = 0,
    console: Console | None = None,
    max_rows: int | None = None,
    force: bool = False,
    max_iter: int = MAX_ITER,
    folds: int = DEFAULT_FOLDS,
) -> Path:
    """Train the gradient-boosted ``ids`` classifier on all rows; write
    ``<repository>/ids/<version>/`` (ONNX graph and TreeSHAP explainer).

    The number of boosting iterations (at most ``max_iter``) is chosen by stratified
    ``folds``-fold cross-validation, whose figures the manifest records; the final model
    is then fitted on every row. ``version`` None picks the next integer version; an
    existing version is only overwritten with ``force=True``. ``max_rows`` trains on the
    first rows only (tests). Returns the version directory written.

    Raises :class:`~mlgate.training.common.MissingDependencyError` (before any work)
    when ``onnx`` is not installed, and
    :class:`~mlgate.training.onnx_export.ExportMismatchError` when the ONNX graph does
    not reproduce the fitted model.
    """
    from mlgate.explain import TREE_SHAP
    from mlgate.explain.trees import raw_scores, tree_arrays

    started = time.perf_counter()
    require_onnx()
    repository = Path(repository)
    paths = [Path(p) for p in data]
    version = resolve_version(repository, [MODEL_NAME], version, force=force)
    dataset = load_ids_dataset(paths, max_rows=max_rows)
    x = clean_features(dataset.x)
    y = dataset.y
    cv_folds = stratified_folds(y, folds, seed)

    with single_threaded(), captured_warnings() as warned:
        best_iter, curve, out_of_fold, nested = choose_iterations(
            x, y, cv_folds, seed=seed, max_iter=max_iter, console=console
        )
        model = _new_model(seed, best_iter).fit(x, y)
        classes = [str(c) for c in model.classes_]
        sklearn_proba = model.predict_proba(x)
        graph = hist_gradient_boosting_to_onnx(model)
        served = run_onnx(graph, x)  # what the server computes, for every row
        trees = tree_arrays(model)
    agreement = _check_export(served, sklearn_proba)
    explainer_raw = raw_scores(trees, x)
    if np.any(explainer_raw.argmax(axis=1) != served.argmax(axis=1)):
        raise ExportMismatchError("ids: the explainer's trees do not reproduce the model")
    label = np.asarray(classes, dtype=object)
    fitted_pred = label[served.argmax(axis=1)]

    cv = cv_report(y, cv_folds, out_of_fold, classes, seed=seed)
    cv["nested"] = nested
    metrics: dict[str, Any] = {
        "split": "cross-validation",
        # Headline figures (what model listings show): the means over the CV folds.
        "macro_f1": cv["macro_f1"]["mean"],
        "accuracy": cv["accuracy"]["mean"],
        "cv": cv,
        "selection": {
            "rule": f"boosting iterations with the best mean CV macro-F1 (steps of {STEP})",
            "chosen": {"boosting_iterations": best_iter},
            "curve": curve,
        },
        "training_rows": {
            "note": "the final model on the rows it was fitted on (optimistic)",
            "accuracy": round(float(np.mean(fitted_pred == y)), 6),
            "macro_f1": round(_macro_f1(y, fitted_pred), 6),
        },
    }
    seconds = round(time.perf_counter() - started, 2)
    payload = npz_bytes(trees)
    manifest = classifier_manifest(
        version,
        (
            "Network intrusion classifier for CICFlowMeter flow records (CICIDS2017, 77 "
            "features): BENIGN or one of six grouped attack classes. Gradient-boosted trees "
            "trained on a 5,050-row sample with a skewed class mix (BENIGN is rare), so the "
            "class probabilities are not calibrated to real traffic."
        ),
        classes,
        x,
        metrics,
        {
            **data_provenance(dataset, max_rows),
            "training_rows": "all rows (no held-out split; figures are cross-validated)",
            "cv_folds": {"folds": folds, "seed": seed, "method": "StratifiedKFold(shuffle)"},
            "seed": seed,
            "algorithm": "sklearn.ensemble.HistGradientBoostingClassifier",
            "served_as": {
                **graph_summary(graph),
                "note": (
                    "the fitted trees as one TreeEnsemble with float64 thresholds, the "
                    "baseline added, softmax"
                ),
                "agreement_with_sklearn": agreement,
            },
            "params": {**HGB_PARAMS, "max_iter": best_iter, "random_state": seed},
            "training_warnings": warned,
            "training_seconds": seconds,
            **environment(),
        },
        explainer=explainer_record(
            TREE_SHAP,
            payload,
            "raw score of the class (softmax over classes = the served probabilities)",
            "expected raw score over the training rows (path-dependent TreeSHAP)",
        ),
    )
    version_dir, _, runtime = write_version(
        repository,
        manifest,
        onnx_model=graph,
        force=force,
        extra_files={manifest["explainer"]["file"]: payload},
        model_description=(
            "Network intrusion classifier (CICIDS2017 flows, BENIGN vs six attack classes)."
        ),
    )
    reloaded = runtime.run(x)
    if not np.allclose(reloaded, served, rtol=0, atol=1e-12):
        raise RuntimeError(f"{version_dir}: the saved model does not reproduce its predictions")
    return version_dir


def _check_export(served: np.ndarray, sklearn_proba: np.ndarray) -> dict[str, object]:
    """ONNX vs scikit-learn probabilities on all rows: close, and the same argmax."""
    agreement = compare_outputs("ids", served, sklearn_proba, rtol=0.0, atol=PROBA_ATOL) | {
        "rows_compared": "all rows"
    }
    differing = int(np.sum(served.argmax(axis=1) != sklearn_proba.argmax(axis=1)))
    if differing:
        raise ExportMismatchError(
            f"ids: the ONNX graph predicts another class than scikit-learn on {differing} rows"
        )
    agreement["same_predicted_class"] = True
    return agreement
