"""The training reference as histogram bins: edges from the manifest's quantiles, the
reference share of each bin, and the training mix of (predicted) classes.

A reference with quantiles ``q_1 <= ... <= q_k`` at probabilities ``p_1 < ... < p_k``
(``reference.quantiles`` named ``p01``, ``p50``, ``p99``, ...) cuts each feature into
``k + 1`` right-closed bins ``(-inf, q_1], (q_1, q_2], ..., (q_k, +inf)`` (equal
quantiles make zero-width bins, which nothing falls in).

The reference share of each bin is ``reference.bin_shares``: the share of the training
rows in it, which training writes (:func:`bin_shares`). A manifest without it gets an
estimate from the quantile probabilities: ``C(q_j) - C(q_{j-1})`` with ``C(-inf) = 0``,
``C(+inf) = 1`` and ``C(q_i) = p`` of the *last* quantile equal to ``q_i``. That is
exact for continuous features but only a lower bound where values repeat (packet
counts, flags): there the estimate flags drift that is not there.

The training class mix is the manifest's ``provenance.class_counts`` (the labels the
classifier was trained on, normalised); for anomaly models, which learn from normal
data only, it is the alarm share the model produced on its held-out data
(``metrics.alarm_share``), as [normal, anomaly].
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mlgate.registry.manifest import Manifest

_QUANTILE_NAME = re.compile(r"^p(\d+)$")

#: The pseudo-feature under which predicted classes (or verdicts) are counted.
PREDICTIONS = "@predicted"


def quantile_probability(name: str) -> float | None:
    """``p01`` -> 0.01, ``p50`` -> 0.5, ``p999`` -> 0.999; None for other names.

    One or two digits are a percentage; more digits are the decimals of the probability.
    """
    match = _QUANTILE_NAME.match(name)
    if match is None:
        return None
    digits = match.group(1)
    value = int(digits) / 100 if len(digits) <= 2 else float(f"0.{digits}")
    return value if 0.0 < value < 1.0 else None


@dataclass(frozen=True)
class ReferenceBins:
    """Bins and reference shares for every feature of a model version."""

    features: tuple[str, ...]
    quantiles: tuple[str, ...]
    """The manifest's names of the quantiles the edges come from (``p01``, ...)."""
    probabilities: np.ndarray
    """(k,) quantile probabilities, increasing."""
    edges: np.ndarray
    """(features, k) right edges of the first k bins, non-decreasing per feature."""
    expected: np.ndarray
    """(features, k + 1) reference share of each bin (each row sums to 1)."""

    @property
    def n_bins(self) -> int:
        return int(self.edges.shape[1]) + 1

    def counts(self, x: np.ndarray) -> np.ndarray:
        """(features, bins) how many rows of ``x`` fall in each bin of each feature."""
        return bin_counts(x, self.edges)


def bin_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(features, k + 1) how many rows of ``x`` fall in each right-closed bin cut by
    ``edges`` (features, k, non-decreasing per feature). NaN falls in the first bin.

    Counts, per feature and edge, the rows strictly above it; a bin's count is the
    difference of its two edges' (no bin index per value: 0.9 against 2.4 ms for
    1,000 x 77 rows with 9 edges, which the drift observer bins for every request)."""
    x = np.asarray(x, dtype=np.float64)
    above = np.count_nonzero(x[:, :, None] > edges[None, :, :], axis=0)  # (features, k)
    counts = np.empty((edges.shape[0], edges.shape[1] + 1), dtype=np.int64)
    counts[:, 0] = len(x) - above[:, 0]
    counts[:, 1:-1] = above[:, :-1] - above[:, 1:]
    counts[:, -1] = above[:, -1]
    return counts


def _sorted_quantiles(
    quantiles: dict[str, list[float]], n_features: int
) -> list[tuple[float, str, list[float]]]:
    named = []
    for name, values in quantiles.items():
        p = quantile_probability(name)
        if p is not None and len(values) == n_features:
            named.append((p, name, values))
    named.sort(key=lambda item: item[0])
    return named


def _edges(named: list[tuple[float, str, list[float]]]) -> np.ndarray:
    # Guard against rounding in the manifest: edges must not decrease along a feature.
    values = np.array([v for _, _, v in named], dtype=np.float64).T
    return np.maximum.accumulate(values, axis=1)


def bin_shares(x: np.ndarray, quantiles: dict[str, list[float]]) -> list[list[float]]:
    """Per feature, the share of ``x``'s rows in each bin cut by ``quantiles`` (what
    training writes as ``reference.bin_shares``)."""
    x = np.asarray(x, dtype=np.float64)
    named = _sorted_quantiles(quantiles, x.shape[1])
    if len(named) != len(quantiles):
        raise ValueError("quantile names must look like p01, p50, p99 (one value per feature)")
    counts = bin_counts(x, _edges(named))
    return [[float(v) for v in row] for row in counts / max(len(x), 1)]


def reference_bins(manifest: Manifest) -> ReferenceBins | None:
    """The bins of ``manifest``'s reference, or None without usable quantiles."""
    reference = manifest.reference
    if reference is None:
        return None
    n = len(manifest.features)
    named = _sorted_quantiles(reference.quantiles, n)
    if not named:
        return None
    probabilities = np.array([p for p, _, _ in named])
    edges = _edges(named)
    k = len(probabilities)
    measured = reference.bin_shares
    if measured is not None and len(named) == len(reference.quantiles):
        expected = np.asarray(measured, dtype=np.float64)
    else:
        # C(q_i): the probability of the last quantile equal to q_i.
        cdf = np.empty_like(edges)
        for f in range(n):
            last = np.searchsorted(edges[f], edges[f], side="right") - 1
            cdf[f] = probabilities[last]
        bounds = np.concatenate([np.zeros((n, 1)), cdf, np.ones((n, 1))], axis=1)
        expected = np.diff(bounds, axis=1)
    assert expected.shape == (n, k + 1)
    names = tuple(name for _, name, _ in named)
    return ReferenceBins(tuple(manifest.feature_names), names, probabilities, edges, expected)


def prediction_labels(manifest: Manifest) -> list[str]:
    """What the predicted-class counts are indexed by."""
    if manifest.task == "classification":
        return list(manifest.classes)
    return ["normal", "anomaly"]


def training_mix(manifest: Manifest) -> tuple[np.ndarray, str] | None:
    """The training share of each prediction label, and where it comes from."""
    labels = prediction_labels(manifest)
    if manifest.task == "classification":
        counts = manifest.provenance.get("class_counts")
        if not isinstance(counts, dict):
            return None
        try:
            values = np.array([float(counts.get(label, 0)) for label in labels])
        except (TypeError, ValueError):
            return None
        total = values.sum()
        if not np.isfinite(total) or total <= 0:
            return None
        return values / total, "provenance.class_counts"
    share = manifest.metrics.get("alarm_share")
    if not isinstance(share, int | float) or not 0.0 <= float(share) <= 1.0:
        return None
    return np.array([1.0 - float(share), float(share)]), "metrics.alarm_share"
