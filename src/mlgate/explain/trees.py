"""Exact TreeSHAP for the tree versions of ``ids``, from the ``shap`` library.

The served artifact is an ONNX graph, which keeps the tree structure but not how many
training rows reached each node (the "cover" that path-dependent TreeSHAP weighs paths
by). Training therefore writes the trees beside the graph as plain arrays in
``explainer.npz`` (no pickle: loaded with ``allow_pickle=False``):

- ``left``, ``right``, ``default``, ``feature``, ``threshold``, ``value``, ``cover``:
  the nodes of all trees, concatenated (children indices local to their tree, -1 at
  leaves; ``default`` is the child taken by a missing value);
- ``tree_start``: the first node of every tree, ``tree_class``: the class whose raw
  score the tree adds to; ``base_offset``: the raw score every class starts from.

The explained output of class ``c`` is its raw score (the softmax of the raw scores is
the probability vector the graph serves). shap's ``TreeExplainer`` gets the trees in
its documented dictionary form, one output per class (a tree's leaves add to its class
only), and computes exact path-dependent TreeSHAP values: per row and class, the base
value (expected raw score over the training rows) plus the contributions is the raw
score (tested against the served probabilities).

``shap`` belongs to the ``train`` extra; it is imported when an explanation is asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KIND = "tree_shap"


def tree_arrays(model: Any) -> dict[str, np.ndarray]:
    """The arrays of ``explainer.npz`` for a fitted HistGradientBoostingClassifier."""
    n_classes = len(model.classes_)
    binary = model.n_trees_per_iteration_ == 1
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("left", "right", "default", "feature", "threshold", "value", "cover")
    }
    starts, targets, offset = [], [], 0
    for iteration in model._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            # Leaves hold unsigned garbage as children: cast before putting -1 there.
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(leaf, -1, nodes["right"].astype(np.int64))
            parts["left"].append(left)
            parts["right"].append(right)
            parts["default"].append(np.where(nodes["missing_go_to_left"] == 1, left, right))
            parts["feature"].append(np.where(leaf, -2, nodes["feature_idx"].astype(np.int64)))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["value"].append(nodes["value"].astype(np.float64))
            parts["cover"].append(nodes["count"].astype(np.float64))
            starts.append(offset)
            targets.append(1 if binary else k)
            offset += len(nodes)
    base = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    if binary:
        base = np.concatenate([[0.0], base])
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["tree_start"] = np.asarray(starts, dtype=np.int64)
    arrays["tree_class"] = np.asarray(targets, dtype=np.int64)
    arrays["base_offset"] = base
    arrays["n_classes"] = np.asarray(n_classes, dtype=np.int64)
    return arrays


def raw_scores(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The raw class scores the trees compute (numpy; for checks), ``x <= threshold``
    going left as in scikit-learn and the served graph."""
    x = np.asarray(x, dtype=np.float64)
    n_classes = int(arrays["n_classes"])
    out = np.tile(arrays["base_offset"], (len(x), 1))
    ends = np.append(arrays["tree_start"][1:], len(arrays["left"]))
    rows = np.arange(len(x))
    for start, end, cls in zip(arrays["tree_start"], ends, arrays["tree_class"], strict=True):
        left, right = arrays["left"][start:end], arrays["right"][start:end]
        feature, threshold = arrays["feature"][start:end], arrays["threshold"][start:end]
        node = np.zeros(len(x), dtype=np.int64)
        while True:
            inner = left[node] >= 0
            if not inner.any():
                break
            f = np.where(inner, feature[node], 0)
            go_left = x[rows, f] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        out[:, cls] += arrays["value"][start:end][node]
    assert out.shape[1] == n_classes
    return out


def shap_model(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The trees in shap's dictionary form: one output per class."""
    n_classes = int(arrays["n_classes"])
    ends = np.append(arrays["tree_start"][1:], len(arrays["left"]))
    trees = []
    for start, end, cls in zip(arrays["tree_start"], ends, arrays["tree_class"], strict=True):
        values = np.zeros((end - start, n_classes))
        values[:, cls] = arrays["value"][start:end]
        trees.append(
            {
                "children_left": arrays["left"][start:end],
                "children_right": arrays["right"][start:end],
                "children_default": arrays["default"][start:end],
                "features": arrays["feature"][start:end],
                "thresholds": arrays["threshold"][start:end],
                "values": values,
                "node_sample_weight": arrays["cover"][start:end],
            }
        )
    return {
        "trees": trees,
        "base_offset": arrays["base_offset"],
        "input_dtype": np.float64,
        "internal_dtype": np.float64,
        "tree_output": "raw_value",
    }


_EXPLAINERS: dict[str, Any] = {}
_MAX_EXPLAINERS = 4


def tree_shap(
    arrays: dict[str, np.ndarray],
    x: np.ndarray,
    classes: np.ndarray,
    *,
    cache_key: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: TreeSHAP values of every feature for ``classes[row]``, the base value and
    the raw score; ``base + values.sum() == raw score`` up to rounding. ``cache_key``
    (the explainer file's SHA-256) keeps shap's explainer, which takes seconds to build,
    for the next call."""
    from mlgate.training.common import MissingDependencyError

    try:
        import shap
    except ImportError:
        raise MissingDependencyError(
            "explaining tree models needs the shap package: pip install 'mlgate[train]'"
        ) from None
    explainer = _EXPLAINERS.get(cache_key) if cache_key is not None else None
    if explainer is None:
        explainer = shap.TreeExplainer(
            shap_model(arrays), feature_perturbation="tree_path_dependent", model_output="raw"
        )
        if cache_key is not None:
            _EXPLAINERS[cache_key] = explainer
            while len(_EXPLAINERS) > _MAX_EXPLAINERS:
                del _EXPLAINERS[next(iter(_EXPLAINERS))]
    x = np.asarray(x, dtype=np.float64)
    values = np.asarray(explainer.shap_values(x, check_additivity=False))
    expected = np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)
    if values.ndim == 2:  # a single output
        values = values[:, :, None]
    rows = np.arange(len(x))
    classes = np.asarray(classes, dtype=np.int64)
    contributions = values[rows, :, classes]
    # The output is the trees' own raw score, computed apart from shap, so that
    # base + contributions == output is a check of shap's values, not a definition.
    return contributions, expected[classes], raw_scores(arrays, x)[rows, classes]
