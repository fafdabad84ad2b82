"""The drift statistics, on shares over the same bins.

With ``e_j`` the reference share and ``a_j`` the live share (count / rows) of bin ``j``:

- **Jensen-Shannon distance** (base 2, in [0, 1]): ``sqrt(JSD)`` with
  ``JSD = 1/2 sum_j a_j log2(a_j / m_j) + 1/2 sum_j e_j log2(e_j / m_j)`` and
  ``m = (a + e) / 2``; terms with a zero share are 0 (no epsilon needed: ``m_j > 0``
  wherever ``a_j`` or ``e_j`` is).
- **Population stability index**: ``PSI = sum_j (a'_j - e'_j) ln(a'_j / e'_j)`` with
  ``a' = max(a, EPSILON)`` and ``e' = max(e, EPSILON)``, ``EPSILON = 1e-4``, so an empty
  bin on either side costs a large but finite amount; a bin empty on both sides costs 0.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-4


def js_distance(live: np.ndarray, reference: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two distributions over the same bins."""
    a = np.asarray(live, dtype=np.float64)
    e = np.asarray(reference, dtype=np.float64)
    m = (a + e) / 2

    def kl_to_m(p: np.ndarray) -> float:
        nonzero = p > 0
        return float(np.sum(p[nonzero] * np.log2(p[nonzero] / m[nonzero])))

    divergence = 0.5 * kl_to_m(a) + 0.5 * kl_to_m(e)
    return float(np.sqrt(max(divergence, 0.0)))


def psi(live: np.ndarray, reference: np.ndarray, epsilon: float = EPSILON) -> float:
    """Population stability index over the same bins (shares floored at ``epsilon``)."""
    a = np.maximum(np.asarray(live, dtype=np.float64), epsilon)
    e = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts as shares (all zeros stay zeros)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts
