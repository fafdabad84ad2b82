"""Training of the IoT anomaly detectors on SKAB (Skoltech Anomaly Benchmark) pump data.

Three unsupervised detectors are fitted on normal operation only
(``anomaly-free/anomaly-free.csv``), each saved as its own model:

- ``iot-isolation-forest``: StandardScaler + IsolationForest (score: -score_samples);
- ``iot-lof``: StandardScaler + LocalOutlierFactor(novelty=True) (score: -score_samples);
- ``iot-autoencoder``: StandardScaler + an MLPRegressor with a bottleneck trained to
  reproduce its (scaled) input (score: mean squared reconstruction error).

Each fitted pipeline is exported to one ONNX graph with float64 input
(:mod:`mlgate.training.onnx_export`) and served by onnxruntime; the isolation forest and
LOF graphs output scikit-learn's ``score_samples`` and their manifests set ``negate``, so
the served score is ``-score_samples`` as before (higher = more anomalous). All scores
below are the graph's: training fails unless they equal the scikit-learn scores (within
:data:`SCORE_RTOL`) on every training, validation and test row and raise the same alarms.

Each detector's ``threshold`` (``score >= threshold`` => anomaly) is the F1-maximising
cut on the validation runs (``valve1/``); its ``score_scale`` is the interquartile range
of the validation scores of normal rows. Held-out metrics come from the test runs
(``other/``), which play no part in fitting or calibration. ``iot`` is a copy of the
detector with the best validation F1.

One global model for all runs is a known weak spot: the testbed's operating point (flow
rate, vibration level) differs between runs, so normal readings of one run often look
anomalous next to the normal data of another. The numbers are recorded as they are.

Per-device baselines (the manifest's ``device_baseline``) address it the way the SKAB
protocol does: every run is streamed as one device, its first
:data:`BASELINE_READINGS` readings make its baseline (mean/std per sensor), and every
later reading is smoothed over the device's last ``window`` readings, mapped onto the
training data (``reference.mean + (x - mean) / std * reference.std``) and scored by the
same detector. ``window`` (from :data:`DEVICE_WINDOWS`) and that threshold are chosen
by F1 on the validation runs streamed that way; the test runs only give metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from mlgate.training.common import (
    ONNX_ARTIFACT,
    DataError,
    best_f1_threshold,
    binary_metrics,
    captured_warnings,
    environment,
    evenly_spaced,
    file_record,
    make_progress,
    read_csv,
    reference_stats,
    resolve_version,
    robust_scale,
    roc_auc,
    single_threaded,
    write_version,
)
from mlgate.training.onnx_export import (
    MEAN_SQUARED_Z,
    RECONSTRUCTION_ERROR,
    SCORES,
    ExportMismatchError,
    autoencoder_to_onnx,
    compare_outputs,
    graph_summary,
    isolation_forest_to_onnx,
    local_outlier_factor_to_onnx,
    require_onnx,
    run_onnx,
    standard_distance_to_onnx,
)

ISOLATION_FOREST = "iot-isolation-forest"
LOF = "iot-lof"
AUTOENCODER = "iot-autoencoder"
SELECTED = "iot"
DETECTORS = (ISOLATION_FOREST, LOF, AUTOENCODER)
#: Made for per-device baselines (not a candidate for ``iot``: it needs all 8 sensors).
DEVICE_DISTANCE = "iot-device-distance"

DEFAULT_DATA_DIR = Path("data/skab")
TRAIN_FILE = Path("anomaly-free") / "anomaly-free.csv"
VALIDATION_DIR = "valve1"
TEST_DIR = "other"
DELIMITER = ";"
LABEL_COLUMN = "anomaly"

#: (feature name, SKAB column, description, unit), in model input order.
FEATURES: tuple[tuple[str, str, str, str], ...] = (
    ("temperature", "Temperature", "Temperature of the pump's engine body.", "°C"),
    ("vibration", "Accelerometer1RMS", "Vibration acceleration (RMS, accelerometer 1).", "g"),
    ("pressure", "Pressure", "Pressure in the loop after the water pump.", "bar"),
    (
        "flow_rate",
        "Volume Flow RateRMS",
        "Circulation flow rate of the fluid in the loop (RMS).",
        "l/min",
    ),
    ("current", "Current", "Current drawn by the pump's electric motor.", "A"),
)
SKAB_COLUMNS = tuple(f[1] for f in FEATURES)
#: Every SKAB sensor: the per-device distance detector uses all eight.
ALL_FEATURES: tuple[tuple[str, str, str, str], ...] = (
    *FEATURES,
    ("vibration_2", "Accelerometer2RMS", "Vibration acceleration (RMS, accelerometer 2).", "g"),
    ("thermocouple", "Thermocouple", "Temperature of the fluid in the circulation loop.", "°C"),
    ("voltage", "Voltage", "Voltage of the pump's electric motor.", "V"),
)
ALL_COLUMNS = tuple(f[1] for f in ALL_FEATURES)

IFOREST_PARAMS: dict[str, Any] = {"n_estimators": 100, "max_samples": "auto"}
LOF_PARAMS: dict[str, Any] = {"n_neighbors": 20, "novelty": True}
AUTOENCODER_PARAMS: dict[str, Any] = {
    "hidden_layer_sizes": (16, 3, 16),
    "activation": "tanh",
    "solver": "adam",
    "alpha": 1e-4,
    "batch_size": 256,  # at most: smaller data sets use one batch
    "learning_rate_init": 1e-3,
    # Converges (loss gain < tol for 20 epochs) after ~700 epochs on the full data.
    "max_iter": 2000,
    "tol": 1e-5,
    "n_iter_no_change": 20,
}

#: Allowed |ONNX - scikit-learn| of a score, relative (float64 graphs: ~1e-15), plus an
#: absolute floor for scores near 0.
SCORE_RTOL = 1e-9
SCORE_ATOL = 1e-12

#: Readings of each run that make its device baseline (the SKAB protocol's 400).
BASELINE_READINGS = 400
#: Smoothing windows tried on validation (the best validation F1 wins, ties: smaller).
DEVICE_WINDOWS = (1, 5, 10, 20, 30)

if TYPE_CHECKING:  # pragma: no cover
    # Imported lazily at run time: it uses mlgate.evaluation, which imports this module.
    from mlgate.training.iot_devices import DetectorSearch

DATA_HINT = (
    "Expected a copy of the SKAB data folder (anomaly-free/anomaly-free.csv, valve1/*.csv, "
    f"other/*.csv; ';'-separated), e.g. {DEFAULT_DATA_DIR} (see data/skab/PROVENANCE.md); "
    "run from the project root or pass --data."
)


def feature_specs(
    features: tuple[tuple[str, str, str, str], ...] = FEATURES,
) -> list[dict[str, Any]]:
    """The manifest ``features`` entries; each SKAB column name is an alias."""
    return [
        {"name": name, "aliases": [column], "description": description, "unit": unit}
        for name, column, description, unit in features
    ]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Run:
    """One SKAB file: features in model order, 0/1 labels (None for anomaly-free)."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    record: dict[str, Any]


@dataclass(frozen=True)
class SkabData:
    train: Run
    validation: list[Run]
    test: list[Run]

    @staticmethod
    def stack(runs: list[Run]) -> tuple[np.ndarray, np.ndarray]:
        x = np.vstack([r.x for r in runs])
        y = np.concatenate([r.y for r in runs if r.y is not None]).astype(np.int64)
        return x, y


def load_skab_file(
    path: Path,
    name: str,
    *,
    labelled: bool,
    max_rows: int | None = None,
    columns: tuple[str, ...] = SKAB_COLUMNS,
) -> Run:
    """Read one SKAB file; ``max_rows`` keeps that many rows evenly spaced over time."""
    table = read_csv(path, delimiter=DELIMITER, what="SKAB file", hint=DATA_HINT)
    keep = evenly_spaced(len(table.rows), max_rows)
    x = table.float_matrix(columns, hint=DATA_HINT)[keep]
    if not np.isfinite(x).all():
        raise DataError(f"{path}: empty or non-finite sensor readings; fix or remove those rows.")
    y = None
    if labelled:
        labels = table.float_matrix([LABEL_COLUMN], hint=DATA_HINT)[keep, 0]
        if not np.isin(labels, (0.0, 1.0)).all():
            raise DataError(f"{path}: column {LABEL_COLUMN!r} must hold only 0 and 1.")
        y = labels.astype(np.int64)
    return Run(name, x, y, file_record(path, table.rows_in_file, len(keep)) | {"name": name})


def _numeric_key(path: Path) -> tuple[int, int, str]:
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def _runs(data_dir: Path, folder: str, max_rows: int | None, columns: tuple[str, ...]) -> list[Run]:
    directory = data_dir / folder
    files = sorted(directory.glob("*.csv"), key=_numeric_key) if directory.is_dir() else []
    if not files:
        raise DataError(f"{directory} has no .csv files. {DATA_HINT}")
    return [
        load_skab_file(p, f"{folder}/{p.name}", labelled=True, max_rows=max_rows, columns=columns)
        for p in files
    ]


def load_skab(
    data_dir: Path,
    *,
    max_rows_per_file: int | None = None,
    columns: tuple[str, ...] = SKAB_COLUMNS,
) -> SkabData:
    """Training (anomaly-free), validation (valve1/) and test (other/) runs."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"SKAB data directory {data_dir} does not exist. {DATA_HINT}")
    if max_rows_per_file is not None and max_rows_per_file < 20:
        raise ValueError("max_rows_per_file must be at least 20")
    train = load_skab_file(
        data_dir / TRAIN_FILE,
        TRAIN_FILE.as_posix(),
        labelled=False,
        max_rows=max_rows_per_file,
        columns=columns,
    )
    return SkabData(
        train,
        _runs(data_dir, VALIDATION_DIR, max_rows_per_file, columns),
        _runs(data_dir, TEST_DIR, max_rows_per_file, columns),
    )


# --------------------------------------------------------------------------- detectors


def _fit_isolation_forest(x: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("iforest", IsolationForest(**IFOREST_PARAMS, random_state=seed)),
        ]
    )
    return pipe.fit(x)


def _fit_lof(x: np.ndarray, seed: int) -> Any:
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    del seed  # deterministic
    return Pipeline([("scale", StandardScaler()), ("lof", LocalOutlierFactor(**LOF_PARAMS))]).fit(x)


def _fit_autoencoder(x: np.ndarray, seed: int) -> Any:
    """Scaler, then an MLP trained on (scaled, scaled); assembled into a fitted Pipeline."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    params = {**AUTOENCODER_PARAMS, "batch_size": min(AUTOENCODER_PARAMS["batch_size"], len(xs))}
    mlp = MLPRegressor(**params, random_state=seed).fit(xs, xs)
    return Pipeline([("scale", scaler), ("ae", mlp)])


def _fit_distance(x: np.ndarray, seed: int) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    del seed  # deterministic
    return Pipeline([("scale", StandardScaler())]).fit(x)


@dataclass(frozen=True)
class DetectorSpec:
    """A detector: how to fit it, its scikit-learn score, its ONNX export.

    ``method`` names the scikit-learn score (see :func:`anomaly_scores`); the ONNX graph
    from ``export`` outputs ``output``, negated by the server when ``negate`` is set.
    """

    name: str
    method: str
    fit: Callable[[np.ndarray, int], Any]
    export: Callable[[Any], Any]
    output: str
    negate: bool
    algorithm: str
    params: dict[str, Any]
    description: str
    features: tuple[tuple[str, str, str, str], ...] = FEATURES

    @property
    def runtime_options(self) -> dict[str, Any]:
        return {"output": self.output, "negate": True} if self.negate else {"output": self.output}


SPECS: dict[str, DetectorSpec] = {
    ISOLATION_FOREST: DetectorSpec(
        ISOLATION_FOREST,
        "score_samples",
        _fit_isolation_forest,
        isolation_forest_to_onnx,
        SCORES,
        True,
        "StandardScaler + sklearn.ensemble.IsolationForest",
        IFOREST_PARAMS,
        "Isolation forest on standardised pump sensors (SKAB); higher score = easier to "
        "isolate from normal operation.",
    ),
    LOF: DetectorSpec(
        LOF,
        "score_samples",
        _fit_lof,
        local_outlier_factor_to_onnx,
        SCORES,
        True,
        "StandardScaler + sklearn.neighbors.LocalOutlierFactor(novelty=True)",
        LOF_PARAMS,
        "Local outlier factor against normal operation of the pump (SKAB); higher score = "
        "lower local density than the normal neighbours.",
    ),
    AUTOENCODER: DetectorSpec(
        AUTOENCODER,
        "reconstruction_error",
        _fit_autoencoder,
        autoencoder_to_onnx,
        RECONSTRUCTION_ERROR,
        False,
        "StandardScaler + sklearn.neural_network.MLPRegressor autoencoder (input = target)",
        {
            **AUTOENCODER_PARAMS,
            "hidden_layer_sizes": list(AUTOENCODER_PARAMS["hidden_layer_sizes"]),
        },
        "Autoencoder (MLP with a 3-unit bottleneck) on standardised pump sensors (SKAB); "
        "score = mean squared reconstruction error.",
    ),
    DEVICE_DISTANCE: DetectorSpec(
        DEVICE_DISTANCE,
        "mean_squared_z",
        _fit_distance,
        standard_distance_to_onnx,
        MEAN_SQUARED_Z,
        False,
        "StandardScaler; score = mean over the 8 sensors of the squared standardised value",
        {},
        "Distance from normal over all eight pump sensors (SKAB): the mean squared "
        "standardised deviation. Made for per-device baselines (send device_id), where each "
        "sensor is standardised by the device's own baseline; it needs all eight sensors.",
        ALL_FEATURES,
    ),
}


def fit_info(estimator: Any) -> dict[str, Any]:
    """What the fit ended with (epochs and loss of the autoencoder, neighbours of LOF)."""
    last = estimator[-1]
    info: dict[str, Any] = {"training_rows": int(estimator[0].n_samples_seen_)}
    if hasattr(last, "loss_curve_"):
        info["epochs"] = int(last.n_iter_)
        info["final_loss"] = round(float(last.loss_), 6)
        info["converged"] = int(last.n_iter_) < int(last.max_iter)
    if hasattr(last, "n_neighbors_"):
        info["n_neighbors"] = int(last.n_neighbors_)
    if hasattr(last, "max_samples_"):
        info["max_samples"] = int(last.max_samples_)
    return info


def anomaly_scores(estimator: Any, method: str, x: np.ndarray) -> np.ndarray:
    """Scores of the scikit-learn pipeline (as the ``sklearn`` runtime computes them):
    higher means more anomalous. The reference the ONNX graphs are checked against."""
    if method == "mean_squared_z":
        z = np.asarray(estimator.transform(x), dtype=np.float64)
        return np.mean(z * z, axis=1)
    if method == "reconstruction_error":
        encoded = estimator[:-1].transform(x)
        decoded = np.asarray(estimator[-1].predict(encoded), dtype=np.float64)
        return np.mean((encoded - decoded.reshape(encoded.shape)) ** 2, axis=1)
    return -np.asarray(getattr(estimator, method)(x), dtype=np.float64)


def served_scores(spec: DetectorSpec, graph: Any, x: np.ndarray) -> np.ndarray:
    """Scores as the ``onnx`` runtime serves them: the graph's output, negated if set."""
    out = run_onnx(graph, x).reshape(len(x))
    return -out if spec.negate else out


@dataclass
class DetectorResult:
    spec: DetectorSpec
    estimator: Any
    graph: Any
    agreement: dict[str, Any]
    threshold: float
    score_scale: float
    metrics: dict[str, Any]
    validation_scores: np.ndarray
    device_baseline: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def validation_f1(self) -> float:
        return float(self.metrics["validation"]["f1"])

    @property
    def validation_auc(self) -> float:
        return float(self.metrics["validation"].get("roc_auc") or 0.0)


def _detection(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    out = binary_metrics(y, scores >= threshold)
    out["roc_auc"] = roc_auc(y, scores)
    return out


def _train_detector(
    spec: DetectorSpec, data: SkabData, seed: int, progress: Any, task: Any
) -> DetectorResult:
    started = time.perf_counter()
    x_train = data.train.x
    x_val, y_val = SkabData.stack(data.validation)
    x_test, y_test = SkabData.stack(data.test)
    with captured_warnings() as warned:
        estimator = spec.fit(x_train, seed)
        progress.update(task, advance=1, status="exporting to ONNX, scoring")
        graph = spec.export(estimator)
        parts = {"train": x_train, "validation": x_val, "test": x_test}
        served = {k: served_scores(spec, graph, x) for k, x in parts.items()}
        reference = {k: anomaly_scores(estimator, spec.method, x) for k, x in parts.items()}
    val_scores, test_scores, train_scores = (served[k] for k in ("validation", "test", "train"))
    threshold, _ = best_f1_threshold(val_scores, y_val)
    scale = robust_scale(val_scores[y_val == 0])
    agreement = _check_export(spec.name, served, reference, threshold)
    progress.update(task, advance=1, status="metrics")
    metrics: dict[str, Any] = {"split": "test", "runs": f"{TEST_DIR}/*.csv"}
    metrics.update(_detection(y_test, test_scores, threshold))
    per_file: dict[str, Any] = {}
    start = 0
    for run in data.test:
        assert run.y is not None
        part = test_scores[start : start + len(run.y)]
        start += len(run.y)
        m = binary_metrics(run.y, part >= threshold)
        per_file[run.name] = {
            k: m[k] for k in ("rows", "anomalies", "precision", "recall", "f1", "false_alarm_rate")
        }
    metrics["per_file"] = per_file
    metrics["validation"] = {"runs": f"{VALIDATION_DIR}/*.csv"} | _detection(
        y_val, val_scores, threshold
    )
    metrics["training_data"] = {
        "rows": len(x_train),
        "alarm_share": round(float(np.mean(train_scores >= threshold)), 6),
    }
    device = calibrate_device_baseline(spec, graph, data, reference_stats(x_train))
    progress.update(
        task,
        advance=1,
        status=f"val F1 {metrics['validation']['f1']:.3f}, test F1 {metrics['f1']:.3f}; "
        f"per device: val F1 {device['metrics']['validation']['f1']:.3f}, "
        f"test F1 {device['metrics']['f1']:.3f}",
    )
    return DetectorResult(
        spec,
        estimator,
        graph,
        agreement,
        threshold,
        scale,
        metrics,
        val_scores,
        device_baseline=device,
        warnings=warned,
        seconds=round(time.perf_counter() - started, 2),
    )


def device_input(
    x: np.ndarray,
    reference_mean: np.ndarray,
    reference_std: np.ndarray,
    *,
    window: int,
    baseline_readings: int = BASELINE_READINGS,
) -> np.ndarray:
    """One run streamed as one device, as the server does it: the model input of every
    reading after the first ``baseline_readings`` (which make the baseline)."""
    from mlgate.devices.store import std_floor
    from mlgate.devices.windows import ReadingWindows

    base = x[:baseline_readings]
    mean = base.mean(axis=0)
    std = np.maximum(
        np.sqrt(np.maximum((base * base).mean(axis=0) - mean * mean, 0.0)), std_floor(mean)
    )
    smoothed = ReadingWindows(1).smooth(("train", "run"), x, window)[baseline_readings:]
    return np.asarray(reference_mean + (smoothed - mean) / std * reference_std)


def baseline_readings_for(data: SkabData) -> int:
    """:data:`BASELINE_READINGS`, unless runs are so short (tests keep few rows per file)
    that fewer must do: at most two thirds of the shortest labelled run."""
    shortest = min(len(r.x) for r in [*data.validation, *data.test])
    return max(2, min(BASELINE_READINGS, shortest // 3 * 2))


def _device_scores(
    spec: DetectorSpec,
    graph: Any,
    runs: list[Run],
    reference: dict[str, Any],
    window: int,
    baseline_readings: int,
) -> tuple[np.ndarray, np.ndarray]:
    mean, std = np.asarray(reference["mean"]), np.asarray(reference["std"])
    scores, labels = [], []
    for run in runs:
        assert run.y is not None
        x = device_input(run.x, mean, std, window=window, baseline_readings=baseline_readings)
        scores.append(served_scores(spec, graph, x))
        labels.append(run.y[baseline_readings:])
    return np.concatenate(scores), np.concatenate(labels)


def calibrate_device_baseline(
    spec: DetectorSpec, graph: Any, data: SkabData, reference: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's ``device_baseline``: window and threshold chosen on validation runs
    streamed one device per run, metrics on the test runs streamed the same way."""
    readings = baseline_readings_for(data)
    by_window: dict[int, tuple[float, float, np.ndarray, np.ndarray]] = {}
    for window in DEVICE_WINDOWS:
        scores, labels = _device_scores(spec, graph, data.validation, reference, window, readings)
        threshold, _ = best_f1_threshold(scores, labels)
        f1 = float(binary_metrics(labels, scores >= threshold)["f1"])
        by_window[window] = (f1, threshold, scores, labels)
    window = max(DEVICE_WINDOWS, key=lambda w: (by_window[w][0], -w))
    _, threshold, val_scores, val_labels = by_window[window]
    test_scores, test_labels = _device_scores(spec, graph, data.test, reference, window, readings)
    return {
        "required_readings": readings,
        "window": window,
        "threshold": threshold,
        "score_scale": robust_scale(val_scores[val_labels == 0]),
        "metrics": {
            "protocol": (
                f"one device per run; its first {readings} readings make the "
                "baseline, every later reading is scored"
            ),
            "split": "test",
            "runs": f"{TEST_DIR}/*.csv",
            **_detection(test_labels, test_scores, threshold),
            "validation": {"runs": f"{VALIDATION_DIR}/*.csv"}
            | _detection(val_labels, val_scores, threshold),
            "window_selection": {
                str(w): {"validation_f1": round(v[0], 6)} for w, v in by_window.items()
            },
            "selection_rule": "window and threshold with the best validation F1 (ties: smaller)",
        },
    }


def _check_export(
    name: str,
    served: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    threshold: float,
) -> dict[str, Any]:
    """ONNX vs scikit-learn scores per part of the data: close, and the same alarms."""
    agreement: dict[str, Any] = {}
    for part, scores in served.items():
        agreement[part] = compare_outputs(
            f"{name} ({part})", scores, reference[part], rtol=SCORE_RTOL, atol=SCORE_ATOL
        )
        differing = int(np.sum((scores >= threshold) != (reference[part] >= threshold)))
        if differing:
            raise ExportMismatchError(
                f"{name} ({part}): at the threshold {threshold:.6g} the ONNX scores raise "
                f"other alarms than scikit-learn's on {differing} rows"
            )
        agreement[part]["same_alarms"] = True
    return agreement


def _manifest(
    result: DetectorResult,
    data: SkabData,
    *,
    version: str,
    seed: int,
    max_rows: int | None,
    device_detector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec = result.spec
    reference = reference_stats(data.train.x)
    extra = {"device_detector": device_detector} if device_detector is not None else {}
    return {
        **extra,
        "name": spec.name,
        "version": version,
        "runtime": "onnx",
        "task": "anomaly",
        "description": spec.description,
        "features": feature_specs(spec.features),
        "threshold": result.threshold,
        "score_scale": result.score_scale,
        "runtime_options": spec.runtime_options,
        "reference": reference,
        "device_baseline": result.device_baseline,
        "metrics": result.metrics,
        "provenance": {
            "dataset": (
                "SKAB (Skoltech Anomaly Benchmark), water-circulation pump testbed; "
                "see data/skab/PROVENANCE.md"
            ),
            "citation": (
                "I. D. Katser, V. O. Kozitsin, Skoltech Anomaly Benchmark (SKAB), Kaggle, "
                "2020, DOI 10.34740/KAGGLE/DSV/1693952"
            ),
            "data_licence": "GPL-3.0",
            "columns": {name: column for name, column, _, _ in spec.features},
            "data": {
                "train": [data.train.record],
                "validation": [r.record for r in data.validation],
                "test": [r.record for r in data.test],
            },
            "split": {
                "train": f"{TRAIN_FILE.as_posix()} (normal operation only; fit)",
                "validation": f"{VALIDATION_DIR}/*.csv (threshold and score_scale)",
                "test": f"{TEST_DIR}/*.csv (held out, metrics only)",
                "rows": {
                    "train": len(data.train.x),
                    "validation": sum(len(r.x) for r in data.validation),
                    "test": sum(len(r.x) for r in data.test),
                },
                "max_rows_per_file": max_rows,
                "row_sampling": "all rows" if max_rows is None else "evenly spaced per file",
                "seed": seed,
            },
            "seed": seed,
            "algorithm": spec.algorithm,
            "params": spec.params,
            "served_as": {
                **graph_summary(result.graph),
                "score": (
                    f"-{spec.method} of the scikit-learn pipeline (graph output negated)"
                    if spec.negate
                    else f"{spec.method.replace('_', ' ')} of the scikit-learn pipeline"
                ),
                "note": "threshold, score_scale and metrics are computed from the graph's scores",
                "agreement_with_sklearn": result.agreement,
            },
            "fit": fit_info(result.estimator),
            "threshold_rule": (
                "F1-maximising cut on the validation scores (ties: the higher threshold), "
                "halfway between adjacent distinct scores; score >= threshold => anomaly"
            ),
            "score_scale_rule": "interquartile range of the validation scores of normal rows",
            "training_warnings": result.warnings,
            "training_seconds": result.seconds,
            **environment(),
        },
    }


def _train_and_write(
    name: str,
    data: SkabData,
    repository: Path,
    version: str,
    seed: int,
    max_rows: int | None,
    force: bool,
    progress: Any,
    results: list[DetectorResult],
    device_detector: dict[str, Any] | None = None,
) -> Path:
    """Fit, export, calibrate and write one detector; its result is appended to ``results``."""
    task = progress.add_task(name, total=4, status="fitting")
    result = _train_detector(SPECS[name], data, seed, progress, task)
    manifest = _manifest(
        result,
        data,
        version=version,
        seed=seed,
        max_rows=max_rows,
        device_detector=device_detector,
    )
    version_dir, _, runtime = write_version(
        repository,
        manifest,
        onnx_model=result.graph,
        force=force,
        model_description=result.spec.description,
    )
    x_val, _ = SkabData.stack(data.validation)
    reloaded = runtime.run(x_val)
    if not np.allclose(reloaded, result.validation_scores, rtol=1e-9, atol=1e-12):
        raise RuntimeError(f"{version_dir}: the saved model does not reproduce its scores")
    progress.update(task, advance=1)
    results.append(result)
    return version_dir


def train_iot(
    data_dir: Path,
    repository: Path,
    *,
    version: str | None = None,
    seed: int = 0,
    console: Console | None = None,
    force: bool = False,
    max_rows_per_file: int | None = None,
    device_search: DetectorSearch | None = None,
) -> list[Path]:
    """Train the three detectors, ``iot`` (the best of them on validation) and
    :data:`DEVICE_DISTANCE` (all eight sensors, for per-device baselines) into
    ``repository``.

    All five get the same version: ``version``, or one after the highest existing
    version of any of them. Existing versions are only overwritten with ``force=True``.
    ``max_rows_per_file`` keeps that many evenly spaced rows of every file (tests).
    ``device_search``: the per-device detector candidates (default: the full search, see
    :mod:`mlgate.training.iot_devices`); the choice goes into every manifest's
    ``device_detector``.
    Returns the version directories in the order of :data:`DETECTORS`, then ``iot``,
    then :data:`DEVICE_DISTANCE`.

    Raises :class:`~mlgate.training.common.MissingDependencyError` (before any work)
    when ``onnx`` is not installed, and
    :class:`~mlgate.training.onnx_export.ExportMismatchError` when an ONNX graph does
    not reproduce its fitted pipeline.
    """
    require_onnx()
    repository = Path(repository)
    version = resolve_version(
        repository, [*DETECTORS, SELECTED, DEVICE_DISTANCE], version, force=force
    )
    data = load_skab(Path(data_dir), max_rows_per_file=max_rows_per_file)
    everything = load_skab(Path(data_dir), max_rows_per_file=max_rows_per_file, columns=ALL_COLUMNS)
    results: list[DetectorResult] = []
    written: list[Path] = []
    with make_progress(console) as progress, single_threaded():
        task = progress.add_task("per-device detectors (CV)", total=2, status="5 sensors")
        detector = device_detector_for(data, FEATURES, device_search)
        progress.update(task, advance=1, status="8 sensors")
        detector_all = device_detector_for(everything, ALL_FEATURES, device_search)
        progress.update(task, advance=1, status=_detector_status(detector, detector_all))
        for name in DETECTORS:
            written.append(
                _train_and_write(
                    name,
                    data,
                    repository,
                    version,
                    seed,
                    max_rows_per_file,
                    force,
                    progress,
                    results,
                    detector,
                )
            )

        best = max(
            range(len(results)),
            key=lambda i: (results[i].validation_f1, results[i].validation_auc, -i),
        )
        chosen = results[best]
        src_dir = written[best]
        manifest = _manifest(
            chosen,
            data,
            version=version,
            seed=seed,
            max_rows=max_rows_per_file,
            device_detector=detector,
        )
        manifest["name"] = SELECTED
        manifest["description"] = (
            f"Pump-sensor anomaly detector (SKAB): a copy of {chosen.spec.name}, the detector "
            "with the best validation F1. " + chosen.spec.description
        )
        manifest["provenance"]["selected_from"] = chosen.spec.name
        manifest["provenance"]["selected_version"] = version
        manifest["provenance"]["selection"] = {
            r.spec.name: {"validation_f1": r.validation_f1, "validation_roc_auc": r.validation_auc}
            for r in results
        }
        manifest["provenance"]["selection_rule"] = "highest validation F1 (then validation ROC AUC)"
        selected_dir, _, _ = write_version(
            repository,
            manifest,
            artifact_file=src_dir / ONNX_ARTIFACT,
            force=force,
            model_description=(
                "Pump-sensor anomaly detector (SKAB): the best of the IoT detectors on validation."
            ),
        )
        written.append(selected_dir)

        written.append(
            _train_and_write(
                DEVICE_DISTANCE,
                everything,
                repository,
                version,
                seed,
                max_rows_per_file,
                force,
                progress,
                [],
                detector_all,
            )
        )
    return written


def device_detector_for(
    data: SkabData,
    features: tuple[tuple[str, str, str, str], ...],
    search: DetectorSearch | None,
) -> dict[str, Any]:
    """The ``device_detector`` of the models taking ``features`` (leave-runs-out CV)."""
    from mlgate.evaluation.skab_cv import LabelledRun
    from mlgate.training.iot_devices import choose_device_detector

    runs = []
    for run in [*data.validation, *data.test]:
        assert run.y is not None
        runs.append(LabelledRun(run.name, run.name.split("/")[0], run.x, run.y))
    return choose_device_detector(
        runs,
        [f[0] for f in features],
        readings=baseline_readings_for(data),
        normal_run=data.train.x,
        search=search,
    )


def _detector_status(*detectors: dict[str, Any]) -> str:
    parts = []
    for d in detectors:
        cv = d["metrics"]["cv"]
        parts.append(
            f"{d['metrics']['family']}: CV F1 {cv['f1']['mean']:.3f}, FAR {cv['far']['mean']:.3f}"
        )
    return "; ".join(parts)
