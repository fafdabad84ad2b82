"""Stratified k-fold cross-validation figures for the ``ids`` classifiers.

The shipped ``ids`` versions are trained on every shared flow; their hyper-parameters
(boosting iterations, DQN episodes, ...) are chosen by the mean macro-F1 over the folds
of a seeded stratified k-fold split, and the manifests record the per-fold figures with
their spread (mean, std, min, max), per class too, and the pooled out-of-fold confusion
matrix. Folds come from scikit-learn's ``StratifiedKFold(shuffle=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_FOLDS = 5


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of each fold; every class is spread over the folds."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.unique(np.asarray(y), return_counts=True)[1]
    if folds < 2 or counts.min() < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} rows of every class "
            f"(the rarest class has {int(counts.min())})"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(np.zeros(len(y)), y)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, (population) std, min and max, rounded to 6 decimals."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(v.mean()), 6),
        "std": round(float(v.std()), 6),
        "min": round(float(v.min()), 6),
        "max": round(float(v.max()), 6),
    }


def cv_report(
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    predicted: np.ndarray,
    classes: Sequence[str],
    *,
    seed: int,
) -> dict[str, Any]:
    """The manifest's ``cv`` block from out-of-fold predictions (labels, all rows).

    Macro-F1 of a fold averages the classes present in that fold's test rows.
    """
    from mlgate.training.common import classification_metrics

    per_fold = [classification_metrics(y[te], predicted[te], classes) for _, te in folds]
    pooled = classification_metrics(y, predicted, classes)
    return {
        "method": (
            f"stratified {len(folds)}-fold cross-validation (StratifiedKFold, shuffled, "
            f"seed {seed}) on all {len(y)} rows; each fold's model never saw its test rows"
        ),
        "folds": len(folds),
        "rows": len(y),
        "macro_f1": spread([m["macro_f1"] for m in per_fold]),
        "accuracy": spread([m["accuracy"] for m in per_fold]),
        "balanced_accuracy": spread([m["balanced_accuracy"] for m in per_fold]),
        "per_class": {
            c: {
                "f1": spread([m["per_class"][c]["f1"] for m in per_fold]),
                "precision": spread([m["per_class"][c]["precision"] for m in per_fold]),
                "recall": spread([m["per_class"][c]["recall"] for m in per_fold]),
                "support": int(np.sum(y == c)),
            }
            for c in classes
        },
        "per_fold_macro_f1": [m["macro_f1"] for m in per_fold],
        "out_of_fold": {
            "note": "all rows, each predicted by the fold model that did not see it",
            "accuracy": pooled["accuracy"],
            "macro_f1": pooled["macro_f1"],
            "confusion_matrix": pooled["confusion_matrix"],
        },
    }


def fold_macro_f1(
    y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]], predicted: np.ndarray
) -> list[float]:
    """Macro-F1 of every fold's test rows (classes present in them)."""
    from sklearn.metrics import f1_score

    out = []
    for _, te in folds:
        labels = sorted(set(y[te].tolist()))
        out.append(
            float(f1_score(y[te], predicted[te], labels=labels, average="macro", zero_division=0))
        )
    return out


def nested_selection(
    scores: Sequence[Sequence[float]] | np.ndarray, candidates: Sequence[int], *, what: str
) -> dict[str, Any]:
    """The selection's own cross-validation (the manifest's ``cv.nested``).

    ``scores[k][i]``: fold ``k``'s macro-F1 with ``candidates[i]`` (boosting iterations,
    episodes). The shipped count is the best of the mean curve, chosen on the same folds
    it is scored on, so its mean is optimistic. Here each fold is scored at the
    candidate with the best mean over the *other* folds (ties: the first), so no fold's
    score helped choose what it scores: the figure versions are compared by.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] != len(candidates) or not len(candidates):
        raise ValueError("scores must be folds x candidates, with at least two folds")
    chosen, per_fold = [], []
    for k in range(s.shape[0]):
        best = int(np.argmax(np.delete(s, k, axis=0).mean(axis=0)))
        chosen.append(int(candidates[best]))
        per_fold.append(float(s[k, best]))
    return {
        "rule": f"{what} with the best mean macro-F1 over the other folds, scored on the fold",
        "macro_f1": spread(per_fold),
        "chosen_per_fold": chosen,
        "per_fold_macro_f1": [round(v, 6) for v in per_fold],
    }
