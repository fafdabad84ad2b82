"""Choosing the per-device detector of the IoT models by leave-runs-out cross-validation.

Every labelled SKAB run (``valve1/`` and ``other/``) is one device: its first
``calibration_readings`` readings fit the detector and its threshold
(:func:`mlgate.devices.detectors.fit`), later readings are streamed and scored.

Candidates come in families: a subset of the model's sensors and a method. Inside a
family the smoothing, threshold rule (quantile, margin), debouncing and method
parameters form a grid. A family's figures are nested cross-validation
(:func:`mlgate.evaluation.skab_cv.cross_validate`): per fold, the grid point with the
best pooled F1 within the FAR budget on the other folds' runs, scored on the fold's runs.
The family with the best mean fold F1 is shipped, with the grid point the same rule
picks on all runs. All families' figures are recorded, so the choice can be checked.

The anomaly-free run adds a check of the bound: calibrated on its first readings, its
later (all normal) readings give the false-alarm rate on normal operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.devices.detectors import fit, initial_state, score
from mlgate.evaluation.skab_cv import (
    FAR_BUDGET,
    LabelledRun,
    Recipe,
    count_table,
    cross_validate,
    recipe_grid,
)

#: Sensors never to use alone, by name: the pump body's temperature drifts by several
#: calibration standard deviations within a normal run (see the README), so families
#: without it are candidates too.
DRIFTING = ("temperature",)
SLOW = ("temperature", "thermocouple")
METHODS = ("distance", "mahalanobis", "pca", "mset")
METHOD_PARAMS: dict[str, Sequence[dict[str, Any]]] = {
    "mahalanobis": [{"shrinkage": 0.01}, {"shrinkage": 0.1}],
    "pca": [{"variance": 0.8}, {"variance": 0.9}],
    "mset": [{"memory": 100}],
}
SMOOTHING = (5, 10, 20, 30)
QUANTILES = (0.99, 1.0)
MARGINS = (1.0, 1.25, 1.5, 2.0, 3.0)
DEBOUNCE = ((1, 1), (3, 5))
FOLDS = 5


@dataclass(frozen=True)
class DetectorSearch:
    """The candidates and the cross-validation (defaults: what the bundled models use)."""

    methods: tuple[str, ...] = METHODS
    smoothing: tuple[int, ...] = SMOOTHING
    quantiles: tuple[float, ...] = QUANTILES
    margins: tuple[float, ...] = MARGINS
    debounce: tuple[tuple[int, int], ...] = DEBOUNCE
    method_params: dict[str, Sequence[dict[str, Any]]] = field(
        default_factory=lambda: dict(METHOD_PARAMS)
    )
    folds: int = FOLDS
    far_budget: float = FAR_BUDGET


def sensor_sets(features: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Candidate sensor subsets (indices into ``features``): all, without the drifting
    pump temperature, and without both temperatures (when those are present)."""
    sets = {"all sensors": tuple(range(len(features)))}
    for label, drop in (("without temperature", DRIFTING), ("without temperatures", SLOW)):
        kept = tuple(i for i, f in enumerate(features) if f not in drop)
        if 0 < len(kept) < len(features) and kept not in sets.values():
            sets[label] = kept
    return sets


def normal_run_far(
    x: np.ndarray, params: dict[str, Any], readings: int, horizon: int
) -> dict[str, Any]:
    """False-alarm rates on a long run of normal operation (readings x chosen sensors).

    ``once``: calibrated on its first readings, every later reading scored (the bound
    holds only while operation stays like the calibration window). ``recalibrated``:
    calibrated on each window of ``readings`` in turn and the next ``horizon`` readings
    (as long as a labelled run's scored part) scored, i.e. a device recalibrated that often.
    """
    from mlgate.devices.detectors import DetectorParams

    p = DetectorParams.from_dict(params)
    model = fit(x[:readings], p)
    once = score(model, x[readings:], initial_state(model, x[:readings])).alarms
    windows = []
    for start in range(0, len(x) - readings - horizon + 1, horizon):
        calibration = x[start : start + readings]
        model = fit(calibration, p)
        stream = x[start + readings : start + readings + horizon]
        windows.append(score(model, stream, initial_state(model, calibration)).alarms)
    recalibrated = np.concatenate(windows) if windows else np.zeros(0, dtype=bool)
    return {
        "note": (
            "the anomaly-free run (all normal): 'once' = calibrated on its first readings, "
            f"all later readings scored; 'recalibrated' = calibrated on each {readings} "
            f"readings, the next {horizon} scored"
        ),
        "readings": len(x),
        "far_once": round(float(once.mean()), 6),
        "far_recalibrated": round(float(recalibrated.mean()), 6) if len(windows) else None,
        "far_recalibrated_per_window": [round(float(w.mean()), 4) for w in windows],
    }


def _family(recipe: Recipe) -> str:
    return f"{recipe.sensors} / {recipe.params.method}"


def choose_device_detector(
    runs: Sequence[LabelledRun],
    features: Sequence[str],
    *,
    readings: int,
    normal_run: np.ndarray | None = None,
    search: DetectorSearch | None = None,
) -> dict[str, Any]:
    """The manifest's ``device_detector`` for a model with ``features`` (run readings
    in that order), chosen and measured as the module docstring says."""
    search = search or DetectorSearch()
    folds, far_budget = search.folds, search.far_budget
    sets = sensor_sets(features)
    recipes = recipe_grid(
        sets,
        search.methods,
        smoothing=search.smoothing,
        quantiles=search.quantiles,
        margins=search.margins,
        debounce=search.debounce,
        method_params=search.method_params,
    )
    table = count_table(runs, recipes, readings)
    families: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(_family(r) for r in recipes):
        members = [i for i, r in enumerate(recipes) if _family(r) == name]
        families[name] = cross_validate(
            runs,
            [recipes[i] for i in members],
            folds=folds,
            far_budget=far_budget,
            table={k: table[i] for k, i in enumerate(members)},
        )
    best = max(families, key=lambda n: (families[n]["cv"]["f1"]["mean"], -list(families).index(n)))
    chosen = families[best]
    params = {k: v for k, v in chosen["selected"].items() if k != "sensors"}
    columns = sets[chosen["selected"]["sensors"]]
    metrics: dict[str, Any] = {
        "protocol": chosen["protocol"],
        "runs": sorted({r.folder for r in runs}),
        "family": best,
        "cv": chosen["cv"],
        "folds": chosen["folds"],
        "selected_on_all_runs": chosen["selected_on_all_runs"],
        "families": {
            name: {key: r["cv"][key] for key in ("f1", "far", "mar")}
            for name, r in families.items()
        },
        "selection_rule": (
            "family (sensors / method) with the best mean nested-CV F1; inside it, the grid "
            f"point with the best pooled F1 at pooled FAR <= {far_budget} on all runs"
        ),
    }
    if normal_run is not None and len(normal_run) > readings:
        horizon = int(np.median([len(r.y) - readings for r in runs]))
        metrics["anomaly_free_run"] = normal_run_far(
            normal_run[:, list(columns)], params, readings, horizon
        )
    return {
        "features": [features[i] for i in columns],
        "calibration_readings": readings,
        "params": params,
        "metrics": metrics,
    }
