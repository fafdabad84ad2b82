"""`mlgate.devices.detectors`: per-device detectors fitted on a calibration window, with a
false-alarm rate bounded by the threshold rule, streaming state and JSON round trips;
and the leave-runs-out cross-validation that chooses them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlgate.devices.detectors import (
    METHODS,
    DetectorParams,
    DeviceModel,
    StreamState,
    fit,
    initial_state,
    k_of_n,
    moving_average,
    score,
)
from mlgate.evaluation.skab_cv import (
    LabelledRun,
    assign_folds,
    count_table,
    cross_validate,
    recipe_grid,
)


def _correlated(rng: np.random.Generator, n: int) -> np.ndarray:
    base = rng.normal(size=(n, 2))
    mixed = np.column_stack([base[:, 0], base[:, 0] + 0.3 * base[:, 1], base[:, 1], base[:, 0]])
    return 50.0 + 3.0 * (mixed + 0.2 * rng.normal(size=(n, 4)))


@pytest.mark.parametrize("method", METHODS)
def test_false_alarm_rate_is_bounded_by_the_quantile(method: str) -> None:
    """On normal operation like the calibration window, about 1 - quantile of the
    readings cross the threshold (no smoothing, margin 1); a shift is caught."""
    rng = np.random.default_rng(0)
    params = DetectorParams(method=method, smoothing=1, quantile=0.95, margin=1.0)  # type: ignore[arg-type]
    model = fit(_correlated(rng, 400), params)
    normal = score(model, _correlated(rng, 4000))
    assert normal.raw.mean() < 0.10
    shifted = _correlated(rng, 500)
    shifted[:, 1] += 20.0  # far off, and off the correlation with sensors 0 and 3
    assert score(model, shifted).raw.mean() > 0.9


def test_margin_and_quantile_raise_the_threshold() -> None:
    rng = np.random.default_rng(1)
    calibration = _correlated(rng, 400)
    low = fit(calibration, DetectorParams(quantile=0.9, margin=1.0))
    high = fit(calibration, DetectorParams(quantile=0.9, margin=2.0))
    top = fit(calibration, DetectorParams(quantile=1.0, margin=1.0))
    assert high.threshold == pytest.approx(2 * low.threshold)
    assert top.threshold > low.threshold
    assert top.calibration_scores["max"] == pytest.approx(top.threshold)


@pytest.mark.parametrize("method", METHODS)
def test_models_round_trip_through_json(method: str) -> None:
    rng = np.random.default_rng(2)
    calibration = _correlated(rng, 300)
    model = fit(calibration, DetectorParams(method=method, smoothing=5))  # type: ignore[arg-type]
    again = DeviceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    rows = _correlated(rng, 50)
    np.testing.assert_array_equal(score(again, rows).scores, score(model, rows).scores)
    assert again.threshold == model.threshold and again.params == model.params
    with pytest.raises(ValueError, match="format"):
        DeviceModel.from_dict({**model.to_dict(), "format": 99})


def test_streaming_in_batches_equals_one_stream() -> None:
    """Smoothing and k-of-n debouncing carry over batches through the stream state."""
    rng = np.random.default_rng(3)
    calibration = _correlated(rng, 400)
    params = DetectorParams(smoothing=10, debounce_k=3, debounce_n=5, quantile=1.0, margin=1.2)
    model = fit(calibration, params)
    rows = _correlated(rng, 300)
    rows[150:, 2] += 10.0
    whole = score(model, rows, initial_state(model, calibration))
    state = initial_state(model, calibration)
    parts = []
    for chunk in np.array_split(rows, 7):
        state = StreamState.from_dict(json.loads(json.dumps(state.to_dict())))
        out = score(model, chunk, state)
        parts.append(out)
        state = out.state
    np.testing.assert_allclose(np.concatenate([p.scores for p in parts]), whole.scores)
    np.testing.assert_array_equal(np.concatenate([p.alarms for p in parts]), whole.alarms)
    assert whole.alarms[200:].all() and not whole.alarms[:100].any()


def test_smoothing_and_debouncing_helpers() -> None:
    x = np.arange(6, dtype=float)[:, None]
    np.testing.assert_allclose(moving_average(x, 3)[:, 0], [0, 0.5, 1, 2, 3, 4])
    np.testing.assert_allclose(moving_average(x[3:], 3, x[:3])[:, 0], [2, 3, 4])
    raw = np.array([1, 0, 1, 1, 0, 0, 0], dtype=bool)
    assert k_of_n(raw, 2, 3).tolist() == [False, False, True, True, True, False, False]
    assert k_of_n(raw[2:], 2, 3, raw[:2]).tolist() == [True, True, True, False, False]


def test_bad_parameters_and_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        DetectorParams(method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="debounce_k"):
        DetectorParams(debounce_k=4, debounce_n=3)
    with pytest.raises(ValueError, match="quantile"):
        DetectorParams(quantile=1.5)
    with pytest.raises(ValueError, match="at least 8"):
        fit(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        fit(np.full((20, 3), np.nan))
    model = fit(_correlated(np.random.default_rng(4), 50), DetectorParams(smoothing=1))
    with pytest.raises(ValueError, match="4 sensors"):
        score(model, np.zeros((2, 3)))


def _runs() -> list[LabelledRun]:
    """Synthetic runs: normal, then an anomaly (a broken correlation), then normal."""
    runs = []
    for k in range(8):
        rng = np.random.default_rng(10 + k)
        x = _correlated(rng, 700) + rng.normal(0, 20, size=4)  # each device its own level
        y = np.zeros(700, dtype=np.int64)
        y[500:620] = 1
        x[500:620, 2] += 6.0
        runs.append(LabelledRun(f"f{k % 2}/{k}.csv", f"f{k % 2}", x, y))
    return runs


def test_leave_runs_out_cross_validation_of_the_selection() -> None:
    runs = _runs()
    folds = assign_folds(runs, 4)
    for k in range(4):  # every fold has a run of each folder
        assert {runs[i].folder for i in np.flatnonzero(folds == k)} == {"f0", "f1"}
    recipes = recipe_grid(
        {"all": (0, 1, 2, 3)},
        ["mahalanobis", "distance"],
        smoothing=(1, 5),
        quantiles=(1.0,),
        margins=(1.0, 2.0),
        debounce=((1, 1),),
    )
    table = count_table(runs, recipes, readings=400)
    result = cross_validate(runs, recipes, folds=4, table=table)
    assert len(result["folds"]) == 4
    assert sorted(n for f in result["folds"] for n in f["test_runs"]) == sorted(
        r.name for r in runs
    )
    assert result["cv"]["f1"]["mean"] > 0.8
    assert result["cv"]["far"]["mean"] <= 0.15
    assert result["selected"]["method"] in ("mahalanobis", "distance")
