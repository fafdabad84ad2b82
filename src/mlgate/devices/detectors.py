"""Per-device anomaly detectors fitted on a device's own calibration window.

A device (one pump, one SKAB run) first sends a calibration window of normal readings
(the SKAB leaderboard protocol: its first 400). :func:`fit` turns that window into a
:class:`DeviceModel`: the detector's parameters *and* its alarm threshold, taken from
the scores of the calibration window itself (a high quantile of them, times a margin).
If later normal operation looks like the calibration window, a reading raises an alarm
with probability about ``1 - quantile`` (less with the margin, the smoothing and the
debouncing), so the false-alarm rate on normal operation is bounded by construction,
and every device can be given its own ``quantile`` and ``margin``.

The scores of the calibration window are cross-fitted: the window is cut into
``calibration_blocks`` consecutive blocks and each block is scored by a detector fitted
on the other blocks, so the threshold sees out-of-sample scores (in-sample scores are
optimistic, most of all for the similarity method, which has the rows in memory).

Methods (all on readings standardised by the calibration mean and std):

- ``distance``: mean squared standardised deviation (sensors taken as independent);
- ``mahalanobis``: Hotelling's T^2 with the calibration covariance, shrunk towards the
  identity by ``shrinkage``;
- ``pca``: PCA T^2 + Q (Hotelling on the first components explaining ``variance`` of
  the calibration variance, plus the squared prediction error off them); the score is
  the larger of the two, each divided by its calibration ``quantile``;
- ``mset``: similarity-based estimation (MSET-like): a memory of up to ``memory``
  calibration states, the reading estimated by kernel regression on it, the score the
  mean squared residual.

Streaming: readings are smoothed by a moving average over the device's last
``smoothing`` readings before they are scored, and an alarm is raised when at least
``debounce_k`` of the last ``debounce_n`` raw verdicts (score >= threshold) were
positive. :class:`StreamState` carries what that needs from one batch to the next.

Everything is numpy; a :class:`DeviceModel` and a :class:`StreamState` round-trip
through JSON (``to_dict``/``from_dict``), so they can live in the database.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

Method = Literal["distance", "mahalanobis", "pca", "mset"]
METHODS: tuple[str, ...] = ("distance", "mahalanobis", "pca", "mset")
#: Format of :meth:`DeviceModel.to_dict` (bumped when the stored layout changes).
FORMAT_VERSION = 1
#: Standard deviations are floored relative to the mean (absolute near 0), as in the
#: per-device baselines, so a sensor that did not move during calibration stays finite.
STD_FLOOR_REL = 1e-6
STD_FLOOR_ABS = 1e-9


@dataclass(frozen=True)
class DetectorParams:
    """How to fit and stream a device's detector (all JSON-serialisable)."""

    method: Method = "mahalanobis"
    #: Moving-average window over raw readings (1: no smoothing).
    smoothing: int = 30
    #: Threshold = ``quantile`` of the cross-fitted calibration scores times ``margin``
    #: (``quantile`` 1.0: their maximum).
    quantile: float = 1.0
    margin: float = 1.5
    debounce_k: int = 1
    debounce_n: int = 1
    calibration_blocks: int = 4
    #: mahalanobis: weight of the identity in the covariance (0..1).
    shrinkage: float = 0.01
    #: pca: share of calibration variance the components keep.
    variance: float = 0.9
    #: mset: memory size (calibration states kept).
    memory: int = 100

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.smoothing < 1 or self.debounce_n < 1 or self.calibration_blocks < 1:
            raise ValueError("smoothing, debounce_n and calibration_blocks must be >= 1")
        if not 1 <= self.debounce_k <= self.debounce_n:
            raise ValueError("debounce_k must be between 1 and debounce_n")
        if not 0.5 <= self.quantile <= 1.0 or self.margin <= 0:
            raise ValueError("quantile must be in [0.5, 1] and margin positive")
        if not 0 <= self.shrinkage <= 1 or not 0 < self.variance <= 1 or self.memory < 2:
            raise ValueError("shrinkage in [0, 1], variance in (0, 1], memory >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorParams:
        return cls(**data)


@dataclass(frozen=True)
class DeviceModel:
    """A fitted detector: standardisation, method state, threshold, calibration facts."""

    params: DetectorParams
    mean: np.ndarray
    std: np.ndarray
    state: dict[str, np.ndarray]
    threshold: float
    calibration_rows: int
    #: Quantiles (p50, p90, p99, max) of the cross-fitted calibration scores.
    calibration_scores: dict[str, float] = field(default_factory=dict)
    #: The cross-fitted calibration scores, sorted (what :func:`with_alarm` takes a new
    #: quantile of); None for models stored before they were kept.
    cross_scores: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists of floats), for the database."""
        return {
            "format": FORMAT_VERSION,
            "params": self.params.to_dict(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "state": {k: np.asarray(v).tolist() for k, v in self.state.items()},
            "threshold": float(self.threshold),
            "calibration_rows": int(self.calibration_rows),
            "calibration_scores": dict(self.calibration_scores),
            "cross_scores": None if self.cross_scores is None else self.cross_scores.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceModel:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported device model format {data.get('format')!r}")
        return cls(
            params=DetectorParams.from_dict(data["params"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
            state={k: np.asarray(v, dtype=np.float64) for k, v in data["state"].items()},
            threshold=float(data["threshold"]),
            calibration_rows=int(data["calibration_rows"]),
            calibration_scores={k: float(v) for k, v in data["calibration_scores"].items()},
            cross_scores=(
                None
                if data.get("cross_scores") is None
                else np.asarray(data["cross_scores"], dtype=np.float64)
            ),
        )


@dataclass
class StreamState:
    """What streaming needs from earlier batches: the last raw readings (smoothing) and
    the last raw verdicts (debouncing)."""

    recent: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    verdicts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def to_dict(self) -> dict[str, Any]:
        return {"recent": self.recent.tolist(), "verdicts": self.verdicts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamState:
        recent = np.asarray(data.get("recent", []), dtype=np.float64)
        return cls(
            recent.reshape(-1, recent.shape[1]) if recent.ndim == 2 else np.zeros((0, 0)),
            np.asarray(data.get("verdicts", []), dtype=bool),
        )


@dataclass(frozen=True)
class Scored:
    """Per reading: the score, the raw verdict, the debounced alarm; and the new state."""

    scores: np.ndarray
    raw: np.ndarray
    alarms: np.ndarray
    state: StreamState


# --------------------------------------------------------------------------- helpers


def moving_average(x: np.ndarray, window: int, history: np.ndarray | None = None) -> np.ndarray:
    """Row i = mean of the last ``window`` rows up to x[i], ``history`` rows first."""
    x = np.asarray(x, dtype=np.float64)
    if window <= 1:
        return x
    past = np.zeros((0, x.shape[1])) if history is None or not len(history) else history
    past = past[-(window - 1) :]
    rows = np.vstack([past, x])
    sums = np.vstack([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
    end = np.arange(len(past), len(rows)) + 1
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)[:, None]


def k_of_n(raw: np.ndarray, k: int, n: int, history: np.ndarray | None = None) -> np.ndarray:
    """Alarm where at least ``k`` of the last ``n`` raw verdicts (``history`` first) hold."""
    raw = np.asarray(raw, dtype=bool)
    if n <= 1:
        return raw.copy()
    past = np.zeros(0, dtype=bool) if history is None else np.asarray(history, dtype=bool)
    past = past[-(n - 1) :]
    flags = np.concatenate([past, raw]).astype(np.int64)
    sums = np.concatenate([[0], np.cumsum(flags)])
    end = np.arange(len(past), len(flags)) + 1
    start = np.maximum(0, end - n)
    return np.asarray((sums[end] - sums[start]) >= k)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), np.maximum(STD_FLOOR_ABS, STD_FLOOR_REL * np.abs(mean)))
    return mean, std


def _fit_state(z: np.ndarray, params: DetectorParams) -> dict[str, np.ndarray]:
    """Method parameters from standardised calibration rows ``z``."""
    d = z.shape[1]
    if params.method == "distance":
        return {}
    cov = np.cov(z, rowvar=False).reshape(d, d)
    if params.method == "mahalanobis":
        shrunk = (1 - params.shrinkage) * cov + params.shrinkage * np.eye(d)
        return {"precision": np.linalg.pinv(shrunk, hermitian=True)}
    if params.method == "pca":
        eigenvalues, vectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.maximum(eigenvalues[order], 1e-9), vectors[:, order]
        share = np.cumsum(eigenvalues) / eigenvalues.sum()
        k = int(min(d - 1, np.searchsorted(share, params.variance) + 1)) if d > 1 else 1
        components = vectors[:, :k]
        t2, q = _pca_parts(z, components, eigenvalues[:k])
        return {
            "components": components,
            "eigenvalues": eigenvalues[:k],
            # Each statistic is divided by its calibration 99th percentile before the max.
            "t2_limit": np.asarray(max(float(np.quantile(t2, 0.99)), 1e-12)),
            "q_limit": np.asarray(max(float(np.quantile(q, 0.99)), 1e-12)),
        }
    # mset: evenly spaced memory states plus, per sensor, the rows of its min and max.
    picks = set(np.linspace(0, len(z) - 1, min(params.memory, len(z))).round().astype(int))
    picks |= set(np.argmin(z, axis=0).tolist()) | set(np.argmax(z, axis=0).tolist())
    memory = z[sorted(picks)]
    gaps = np.sqrt(_squared_distances(memory, memory))
    np.fill_diagonal(gaps, np.inf)
    bandwidth = float(np.median(gaps.min(axis=1))) if len(memory) > 1 else 1.0
    return {"memory": memory, "bandwidth": np.asarray(max(bandwidth, 1e-3))}


def _pca_parts(
    z: np.ndarray, components: np.ndarray, eigenvalues: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    t = z @ components
    t2 = np.sum(t * t / eigenvalues, axis=1)
    residual = z - t @ components.T
    return t2, np.sum(residual * residual, axis=1)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a * a, axis=1)[:, None] - 2 * a @ b.T + np.sum(b * b, axis=1)[None, :]
    return np.maximum(d, 0.0)


def _raw_scores(z: np.ndarray, method: str, state: dict[str, np.ndarray]) -> np.ndarray:
    """Scores of standardised rows (higher = further from the calibration window)."""
    if method == "distance":
        return np.mean(z * z, axis=1)
    if method == "mahalanobis":
        return np.einsum("ij,jk,ik->i", z, state["precision"], z) / z.shape[1]
    if method == "pca":
        t2, q = _pca_parts(z, state["components"], state["eigenvalues"])
        return np.maximum(t2 / state["t2_limit"], q / state["q_limit"])
    memory, bandwidth = state["memory"], float(state["bandwidth"])
    logits = -_squared_distances(z, memory) / (2 * bandwidth * bandwidth)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    estimate = (weights / weights.sum(axis=1, keepdims=True)) @ memory
    return np.mean((z - estimate) ** 2, axis=1)


def fit_core(x: np.ndarray, params: DetectorParams) -> tuple[np.ndarray, np.ndarray, dict]:
    """Standardisation and method state fitted on (already smoothed) rows."""
    mean, std = _standardise(x)
    return mean, std, _fit_state((x - mean) / std, params)


def score_core(x: np.ndarray, core: tuple[np.ndarray, np.ndarray, dict], method: str) -> Any:
    """Scores of (already smoothed) rows under a :func:`fit_core` result."""
    mean, std, state = core
    return _raw_scores((x - mean) / std, method, state)


# --------------------------------------------------------------------------- public API


def fit(calibration: np.ndarray, params: DetectorParams | None = None) -> DeviceModel:
    """Fit a device's detector and its threshold on its calibration window (raw readings,
    oldest first; rows x sensors).

    The window is smoothed as streaming smooths it; the first ``smoothing - 1`` smoothed
    rows (averages of fewer readings) are left out of the fit when enough rows remain.
    """
    params = params or DetectorParams()
    x = np.asarray(calibration, dtype=np.float64)
    if x.ndim != 2 or len(x) < 8 or x.shape[1] < 1:
        raise ValueError("the calibration window needs at least 8 readings of 1+ sensors")
    if not np.isfinite(x).all():
        raise ValueError("the calibration window holds non-finite readings")
    smoothed = moving_average(x, params.smoothing)
    skip = params.smoothing - 1 if len(x) - (params.smoothing - 1) >= 8 else 0
    rows = smoothed[skip:]
    cross = np.sort(cross_fitted_scores(rows, params))
    core = fit_core(rows, params)
    return DeviceModel(
        params=params,
        mean=core[0],
        std=core[1],
        state=core[2],
        threshold=alarm_threshold(cross, params.quantile, params.margin),
        calibration_rows=len(x),
        calibration_scores={
            "p50": float(np.quantile(cross, 0.5)),
            "p90": float(np.quantile(cross, 0.9)),
            "p99": float(np.quantile(cross, 0.99)),
            "max": float(cross.max()),
        },
        cross_scores=cross,
    )


def alarm_threshold(cross: np.ndarray, quantile: float, margin: float) -> float:
    """The alarm threshold: ``quantile`` of the cross-fitted calibration scores times
    ``margin`` (floored just above 0, so a flat window still alarms on a change)."""
    return max(float(np.quantile(cross, quantile)), 1e-12) * margin


def with_alarm(model: DeviceModel, *, quantile: float, margin: float) -> DeviceModel:
    """``model`` with another alarm quantile and margin: the threshold is taken again
    from its calibration scores (no refit, the stream goes on)."""
    if model.cross_scores is None:
        raise ValueError(
            "this detector was fitted before its calibration scores were kept: reset it "
            "(it calibrates again) to change its alarm settings"
        )
    params = replace(model.params, quantile=quantile, margin=margin)  # validates them
    threshold = alarm_threshold(model.cross_scores, quantile, margin)
    return replace(model, params=params, threshold=threshold)


def cross_fitted_scores(rows: np.ndarray, params: DetectorParams) -> np.ndarray:
    """Each of ``calibration_blocks`` consecutive blocks scored by a fit on the others."""
    blocks = min(params.calibration_blocks, len(rows) // 4)
    if blocks <= 1:
        return np.asarray(score_core(rows, fit_core(rows, params), params.method))
    edges = np.linspace(0, len(rows), blocks + 1).round().astype(int)
    out = np.empty(len(rows))
    for lo, hi in itertools.pairwise(edges):
        rest = np.concatenate([rows[:lo], rows[hi:]])
        out[lo:hi] = score_core(rows[lo:hi], fit_core(rest, params), params.method)
    return out


def score(model: DeviceModel, rows: np.ndarray, state: StreamState | None = None) -> Scored:
    """Score a device's next readings (raw, oldest first) with its fitted model.

    ``state`` is the device's :class:`StreamState` after its previous readings (None:
    a fresh stream; the calibration window's last readings are a good start, see
    :func:`initial_state`). Returns scores, raw verdicts, debounced alarms and the new
    state; the inputs are not modified.
    """
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != model.n_features:
        raise ValueError(f"expected rows of {model.n_features} sensors")
    state = state or StreamState()
    p = model.params
    history = state.recent if state.recent.size and state.recent.shape[1] == x.shape[1] else None
    smoothed = moving_average(x, p.smoothing, history)
    scores = _raw_scores((smoothed - model.mean) / model.std, p.method, model.state)
    raw = scores >= model.threshold
    alarms = k_of_n(raw, p.debounce_k, p.debounce_n, state.verdicts)
    past = history if history is not None else np.zeros((0, x.shape[1]))
    recent = np.vstack([past, x])[-(p.smoothing - 1) :] if p.smoothing > 1 else x[:0]
    verdicts = np.concatenate([state.verdicts, raw])[-(p.debounce_n - 1) :]
    if p.debounce_n <= 1:
        verdicts = raw[:0]
    return Scored(scores, raw, alarms, StreamState(recent.copy(), verdicts.copy()))


def initial_state(model: DeviceModel, calibration: np.ndarray) -> StreamState:
    """The stream state right after the calibration window (its last readings)."""
    x = np.asarray(calibration, dtype=np.float64)
    keep = model.params.smoothing - 1
    return StreamState(x[-keep:].copy() if keep else x[:0], np.zeros(0, dtype=bool))


def with_params(model: DeviceModel, calibration: np.ndarray, **changes: Any) -> DeviceModel:
    """Refit with some parameters changed (e.g. a device's own ``quantile``/``margin``)."""
    return fit(calibration, replace(model.params, **changes))
