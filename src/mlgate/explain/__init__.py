"""Why a flow was flagged: per-row feature contributions for a version of ``ids``.

:func:`explain` takes a version (its directory, or a loaded ``ModelVersion``) and rows
in the manifest's feature order, and returns for every row the class explained (by
default the predicted one), the model's output for that class, a base value, and the
signed contribution of every feature, the ``top_k`` largest in magnitude listed first.
For both methods ``base_value + sum(contributions) == output`` (to rounding):

- tree versions (manifest ``explainer.kind`` ``tree_shap``): exact path-dependent
  TreeSHAP values from the ``shap`` library (:mod:`mlgate.explain.trees`); the output is
  the class's raw score, the base value its expectation over the training rows;
- the DQN (``integrated_gradients``): exact integrated gradients against the reference
  profile's medians (``reference.quantiles.p50``; :mod:`mlgate.explain.gradients`); the
  output is the softmax logit ``mean Q / T``, the base value that logit at the medians.

The softmax of the outputs over all classes is the probability vector the version
serves. The explainer's file (``explainer.npz``, plain arrays, no pickle) is written by
``mlgate train`` beside the ONNX graph and its SHA-256 is checked before use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.registry.manifest import Manifest, load_manifest, sha256_file

EXPLAINER_FILE = "explainer.npz"
TREE_SHAP = "tree_shap"
INTEGRATED_GRADIENTS = "integrated_gradients"

__all__ = [
    "EXPLAINER_FILE",
    "INTEGRATED_GRADIENTS",
    "TREE_SHAP",
    "Contribution",
    "ExplainerError",
    "RowExplanation",
    "explain",
    "load_arrays",
]


class ExplainerError(ValueError):
    """The version has no usable explainer, or the rows do not fit it."""


@dataclass(frozen=True)
class Contribution:
    """One feature of one row: its value and its signed contribution to the output."""

    feature: str
    value: float
    contribution: float


@dataclass(frozen=True)
class RowExplanation:
    """One row: what was explained and how the output splits over the features."""

    predicted_class: str
    explained_class: str
    method: str
    output: float
    base_value: float
    top: list[Contribution]
    contributions: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the full contribution vector left out)."""
        return {
            "predicted_class": self.predicted_class,
            "explained_class": self.explained_class,
            "method": self.method,
            "output": self.output,
            "base_value": self.base_value,
            "top": [c.__dict__ for c in self.top],
        }


def _source(model: Any) -> tuple[Manifest, Path]:
    if isinstance(model, str | Path):
        path = Path(model)
        return load_manifest(path), path
    return model.manifest, Path(model.path)


def load_arrays(version_dir: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """The explainer's arrays, after checking the file against the manifest's SHA-256."""
    spec = manifest.explainer
    if spec is None:
        raise ExplainerError(
            f"{manifest.name} version {manifest.version} has no explainer "
            "(retrain it with `mlgate train ids`)"
        )
    path = Path(version_dir) / spec.file
    if not path.is_file() or sha256_file(path) != spec.sha256:
        raise ExplainerError(f"{path} is missing or does not match its recorded sha256")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


_ARRAYS: dict[tuple[str, str], dict[str, np.ndarray]] = {}
_MAX_CACHED = 8


def _loaded_arrays(version_dir: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """:func:`load_arrays`, kept per explainer file (its SHA-256 is checked once)."""
    if manifest.explainer is None:
        return load_arrays(version_dir, manifest)  # raises: the version has no explainer
    key = (str(version_dir), manifest.explainer.sha256)
    arrays = _ARRAYS.get(key)
    if arrays is None:
        arrays = load_arrays(version_dir, manifest)
        _ARRAYS[key] = arrays
        while len(_ARRAYS) > _MAX_CACHED:
            del _ARRAYS[next(iter(_ARRAYS))]
    return arrays


def explain(
    model: Any,
    matrix: np.ndarray,
    top_k: int = 5,
    *,
    explained_class: str | None = None,
) -> list[RowExplanation]:
    """Per-row contributions for the version ``model`` (a version directory or a loaded
    ``ModelVersion``); ``matrix`` holds rows in the manifest's feature order (cleaned as
    for serving). ``explained_class`` None explains each row's predicted class."""
    manifest, version_dir = _source(model)
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(manifest.features):
        raise ExplainerError(f"expected rows of {len(manifest.features)} features")
    if not np.isfinite(x).all():
        raise ExplainerError("rows must hold finite numbers only")
    if top_k < 1:
        raise ExplainerError("top_k must be at least 1")
    arrays = _loaded_arrays(version_dir, manifest)
    assert manifest.explainer is not None
    kind = manifest.explainer.kind
    if kind == TREE_SHAP:
        from mlgate.explain.trees import raw_scores, tree_shap

        outputs = raw_scores(arrays, x)
        classes = _classes(manifest, outputs, explained_class)
        contributions, base, output = tree_shap(
            arrays, x, classes, cache_key=manifest.explainer.sha256
        )
    elif kind == INTEGRATED_GRADIENTS:
        from mlgate.explain.gradients import QEnsemble, integrated_gradients

        network = QEnsemble.from_arrays(arrays)
        outputs = network.logits(network.preprocess(x))
        classes = _classes(manifest, outputs, explained_class)
        reference = manifest.reference
        if reference is None or "p50" not in reference.quantiles:
            raise ExplainerError("integrated gradients need the reference medians (p50)")
        contributions, base, output = integrated_gradients(
            network, x, np.asarray(reference.quantiles["p50"]), classes
        )
    else:
        raise ExplainerError(f"unknown explainer kind {kind!r}")
    names = manifest.feature_names
    predicted = outputs.argmax(axis=1)
    result = []
    for i in range(len(x)):
        order = np.argsort(-np.abs(contributions[i]), kind="stable")[:top_k]
        result.append(
            RowExplanation(
                predicted_class=manifest.classes[int(predicted[i])],
                explained_class=manifest.classes[int(classes[i])],
                method=kind,
                output=float(output[i]),
                base_value=float(base[i]),
                top=[
                    Contribution(names[j], float(x[i, j]), float(contributions[i, j]))
                    for j in order
                ],
                contributions=contributions[i],
            )
        )
    return result


def _classes(manifest: Manifest, outputs: np.ndarray, explained: str | None) -> np.ndarray:
    if explained is None:
        return np.asarray(outputs.argmax(axis=1), dtype=np.int64)
    if explained not in manifest.classes:
        raise ExplainerError(f"{explained!r} is not a class of {manifest.name}")
    return np.full(len(outputs), manifest.classes.index(explained), dtype=np.int64)
