"""Leave-runs-out cross-validation of the per-device detectors on SKAB (offline).

Protocol (the SKAB leaderboard's, one device per run): each labelled run's first
:data:`CALIBRATION_READINGS` readings fit the device's detector and its threshold
(:func:`mlgate.devices.detectors.fit`), and every later reading is scored as a stream.
F1, FAR (false alarm rate) and MAR (missed alarm rate) are pooled over the scored
readings of the runs in question.

What cross-validation chooses is the recipe: the sensors used, the method and its
parameters, the smoothing, the threshold rule (quantile, margin) and the debouncing.
The labelled runs (``valve1/`` and ``other/``) are dealt into folds, whole runs at a
time and each folder spread over the folds. For every fold, the best recipe on the
other folds' runs (highest pooled F1 among recipes whose pooled FAR is within the
budget; if none is, the lowest FAR) is scored on the fold's runs: the fold figures
estimate what the selection procedure gives on runs it has not seen. The same
selection on all runs gives the shipped recipe.

The fit and the stream scores of a run depend on the sensors, method, method
parameters and smoothing only; thresholds and debouncing are applied afterwards, so
the grid is cheap to search.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlgate.devices.detectors import (
    DetectorParams,
    cross_fitted_scores,
    fit_core,
    k_of_n,
    moving_average,
    score_core,
)
from mlgate.training.common import binary_metrics

CALIBRATION_READINGS = 400
#: The FAR the selection must keep (pooled over the training folds' runs).
FAR_BUDGET = 0.15


@dataclass(frozen=True)
class LabelledRun:
    """One run: readings (rows x all sensors), 0/1 labels, its folder (for the folds)."""

    name: str
    folder: str
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Recipe:
    """Sensors (column indices into the runs' readings) and the detector parameters."""

    sensors: str
    columns: tuple[int, ...]
    params: DetectorParams

    @property
    def fit_key(self) -> tuple[Any, ...]:
        p = self.params
        return (self.columns, p.method, p.smoothing, p.shrinkage, p.variance, p.memory)

    def describe(self) -> dict[str, Any]:
        return {"sensors": self.sensors, **self.params.to_dict()}


@dataclass(frozen=True)
class RunScores:
    """A run under one fit: cross-fitted calibration scores, stream scores, labels."""

    calibration: np.ndarray
    stream: np.ndarray
    labels: np.ndarray


def run_scores(run: LabelledRun, recipe: Recipe, readings: int) -> RunScores:
    """Fit on the run's first ``readings`` readings; score the rest as one stream."""
    p = recipe.params
    x = run.x[:, list(recipe.columns)]
    smoothed = moving_average(x, p.smoothing)
    skip = p.smoothing - 1 if readings - (p.smoothing - 1) >= 8 else 0
    rows = smoothed[skip:readings]
    core = fit_core(rows, p)
    return RunScores(
        cross_fitted_scores(rows, p),
        np.asarray(score_core(smoothed[readings:], core, p.method)),
        run.y[readings:],
    )


def verdicts(scores: RunScores, params: DetectorParams) -> np.ndarray:
    """Debounced alarms of a run's stream under the threshold rule of ``params``."""
    threshold = max(float(np.quantile(scores.calibration, params.quantile)), 1e-12)
    raw = scores.stream >= threshold * params.margin
    return k_of_n(raw, params.debounce_k, params.debounce_n)


def pooled(runs: Iterable[tuple[RunScores, np.ndarray]]) -> dict[str, Any]:
    labels, alarms = zip(*((s.labels, a) for s, a in runs), strict=True)
    return binary_metrics(np.concatenate(labels), np.concatenate(alarms))


def assign_folds(runs: Sequence[LabelledRun], folds: int) -> np.ndarray:
    """Fold of each run: per folder (in name order) dealt round-robin, continuing the
    count across folders so each fold gets runs of every folder."""
    fold = np.zeros(len(runs), dtype=np.int64)
    k = 0
    for folder in sorted({r.folder for r in runs}):
        members = sorted(
            (i for i, r in enumerate(runs) if r.folder == folder), key=lambda i: runs[i].name
        )
        for i in members:
            fold[i] = k % folds
            k += 1
    return fold


def select(
    table: dict[int, dict[int, dict[str, Any]]],
    train: Sequence[int],
    far_budget: float,
) -> int:
    """Index of the recipe with the best pooled F1 on ``train`` runs within the budget."""
    best: tuple[float, float, int] | None = None
    for index, per_run in table.items():
        m = _pool_counts([per_run[i] for i in train])
        within = m["far"] <= far_budget
        key = (1.0 if within else 0.0, m["f1"] if within else -m["far"], -index)
        if best is None or key > best:
            best = key
    assert best is not None
    return -best[2]


def _counts(labels: np.ndarray, alarms: np.ndarray) -> dict[str, int]:
    t, p = labels.astype(bool), alarms.astype(bool)
    return {
        "tp": int(np.sum(t & p)),
        "fp": int(np.sum(~t & p)),
        "tn": int(np.sum(~t & ~p)),
        "fn": int(np.sum(t & ~p)),
    }


def _pool_counts(counts: Sequence[dict[str, int]]) -> dict[str, float]:
    tp = sum(c["tp"] for c in counts)
    fp = sum(c["fp"] for c in counts)
    tn = sum(c["tn"] for c in counts)
    fn = sum(c["fn"] for c in counts)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": f1,
        "far": fp / (fp + tn) if fp + tn else 0.0,
        "mar": fn / (fn + tp) if fn + tp else 0.0,
        "precision": precision,
        "recall": recall,
    }


def count_table(
    runs: Sequence[LabelledRun],
    recipes: Sequence[Recipe],
    readings: int = CALIBRATION_READINGS,
    on_fit: Callable[[], None] | None = None,
) -> dict[int, dict[int, dict[str, int]]]:
    """Confusion counts of every recipe on every run (fits shared between recipes)."""
    cache: dict[tuple[Any, ...], list[RunScores]] = {}
    table: dict[int, dict[int, dict[str, int]]] = {}
    for index, recipe in enumerate(recipes):
        key = recipe.fit_key
        if key not in cache:
            cache[key] = [run_scores(run, recipe, readings) for run in runs]
            if on_fit is not None:
                on_fit()
        table[index] = {
            i: _counts(s.labels, verdicts(s, recipe.params)) for i, s in enumerate(cache[key])
        }
    return table


def _spread(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(v.mean()), 4),
        "std": round(float(v.std()), 4),
        "min": round(float(v.min()), 4),
        "max": round(float(v.max()), 4),
    }


def cross_validate(
    runs: Sequence[LabelledRun],
    recipes: Sequence[Recipe],
    *,
    folds: int = 5,
    far_budget: float = FAR_BUDGET,
    table: dict[int, dict[int, dict[str, int]]] | None = None,
) -> dict[str, Any]:
    """Nested leave-runs-out CV of selecting among ``recipes``; see the module docstring.

    Returns per fold the recipe chosen on the other folds and its pooled F1/FAR/MAR on
    the fold's runs, their mean/std/min/max, and the recipe the same rule picks on all
    runs (with its pooled figures, which are optimistic: chosen on those runs).
    """
    if table is None:
        table = count_table(runs, recipes)
    fold_of = assign_folds(runs, folds)
    per_fold: list[dict[str, Any]] = []
    for k in range(folds):
        train = [i for i in range(len(runs)) if fold_of[i] != k]
        test = [i for i in range(len(runs)) if fold_of[i] == k]
        chosen = select(table, train, far_budget)
        m = _pool_counts([table[chosen][i] for i in test])
        per_fold.append(
            {
                "fold": k,
                "test_runs": [runs[i].name for i in test],
                "recipe": recipes[chosen].describe(),
                **{key: round(value, 4) for key, value in m.items()},
            }
        )
    every = list(range(len(runs)))
    final = select(table, every, far_budget)
    return {
        "protocol": (
            f"leave-runs-out, {folds} folds of whole runs; per run the first "
            f"{CALIBRATION_READINGS} readings calibrate, later readings are scored; "
            f"selection: best pooled F1 with pooled FAR <= {far_budget} on the other folds"
        ),
        "folds": per_fold,
        "cv": {key: _spread([f[key] for f in per_fold]) for key in ("f1", "far", "mar")},
        "selected": recipes[final].describe(),
        "selected_on_all_runs": {
            key: round(value, 4)
            for key, value in _pool_counts([table[final][i] for i in every]).items()
        },
    }


def recipe_grid(
    sensor_sets: dict[str, tuple[int, ...]],
    methods: Sequence[str],
    *,
    smoothing: Sequence[int] = (1, 10, 20, 30, 45),
    quantiles: Sequence[float] = (0.99, 1.0),
    margins: Sequence[float] = (1.0, 1.25, 1.5, 2.0, 3.0),
    debounce: Sequence[tuple[int, int]] = ((1, 1), (3, 5), (6, 10)),
    method_params: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> list[Recipe]:
    """Every combination (method parameters per method from ``method_params``)."""
    method_params = method_params or {}
    recipes = []
    for (name, columns), method, w in itertools.product(sensor_sets.items(), methods, smoothing):
        for extra in method_params.get(method, [{}]):
            base = DetectorParams(method=method, smoothing=w, **extra)  # type: ignore[arg-type]
            for q, m, (k, n) in itertools.product(quantiles, margins, debounce):
                params = replace(base, quantile=q, margin=m, debounce_k=k, debounce_n=n)
                recipes.append(Recipe(name, columns, params))
    return recipes
