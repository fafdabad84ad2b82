"""ONNX graphs of the fitted models, and the proof that they compute what scikit-learn does.

Every bundled model is served by onnxruntime (runtime ``onnx``): one graph per model with
one float64 input ``x`` (rows x features, manifest order) and one output. The input is
float64 because CICFlowMeter counters and rates reach 1e9 and more, where float32 keeps
only 7 significant digits and would move rows across tree thresholds. The arithmetic
stays in float64 throughout.

The graphs are written with :mod:`onnx.helper` from the fitted attributes of the
scikit-learn estimators:

- HistGradientBoostingClassifier: ``TreeEnsemble`` (ai.onnx.ml 5) sums the leaf values
  per class, ``Add`` the baseline, ``Softmax``; output ``probabilities``.
- StandardScaler + IsolationForest: scaling (``Sub``, ``Div``), the float32 rounding that
  scikit-learn's trees apply to their input, ``TreeEnsemble`` summing each tree's path
  length, ``-(2 ** (-depth / c(max_samples)))``; output ``scores`` = ``score_samples``
  (higher = more normal; the manifest sets ``negate``).
- StandardScaler + LocalOutlierFactor(novelty=True): scaling, squared distances to the
  training rows (``MatMul``), the k nearest (``TopK``), reachability distances and local
  reachability densities; output ``scores`` = ``score_samples`` (``negate`` as above).
  Rows go through one at a time (``If``: a single row directly, else a ``Scan`` over
  the rows), so memory holds one row's 9,405 distances, not a batch's.
- StandardScaler + MLPRegressor autoencoder: scaling, the MLP forward pass (``MatMul``,
  ``Add``, ``Tanh``), ``mean((scaled - reconstruction) ** 2)`` per row; output
  ``reconstruction_error`` (higher = more anomalous).

skl2onnx (1.20, with onnx 1.23 and onnxruntime 1.31) was tried first and is not used:
its HistGradientBoostingClassifier converter fails ("Expected an int, got a boolean")
and writes float32 thresholds even for float64 input; its IsolationForest converter
rejects float64 input ("Conflicted constraint 'T'") and its float32 graph differs from
``decision_function`` by up to 1e-3; its LocalOutlierFactor graph is exact in float64 but
loops (``Scan``) over the 9,405 training rows: 45 ms for one row.

``onnx`` is only needed to train (``pip install 'mlgate[train]'``); it is imported when a
graph is built. onnxruntime, which runs the graphs, is a core dependency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.training.common import MissingDependencyError

#: Opsets of the graphs: ONNX 17, and ai.onnx.ml 5 for ``TreeEnsemble`` (onnxruntime >= 1.20).
OPSET = 17
ML_OPSET = 5
ML_DOMAIN = "ai.onnx.ml"
INPUT_NAME = "x"
#: Output names (``runtime_options.output`` of the manifests).
PROBABILITIES = "probabilities"
SCORES = "scores"
RECONSTRUCTION_ERROR = "reconstruction_error"
MEAN_SQUARED_Z = "mean_squared_z"

#: ``TreeEnsemble`` enums (ai.onnx.ml 5).
_BRANCH_LEQ = 0
_AGGREGATE_SUM = 1
_POST_TRANSFORM_NONE = 0


def require_onnx() -> Any:
    """The ``onnx`` module, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            "training exports the models to ONNX and needs the 'onnx' package, which is not "
            "installed: pip install 'mlgate[train]'"
        ) from exc
    return onnx


# --------------------------------------------------------------------------- graph building


@dataclass
class _Shared:
    """What a graph and its subgraphs share: constants, the node counter, the opsets."""

    onnx: Any
    initializers: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    uses_ml: bool = False


class _Graph:
    """A small builder: nodes with generated output names, float64 constants.

    :meth:`sub` gives the builder of a subgraph (``If`` branch, ``Scan`` body); its
    constants are stored in the main graph, where subgraphs see them.
    """

    def __init__(self, name: str, shared: _Shared | None = None) -> None:
        self.shared = shared or _Shared(require_onnx())
        self.onnx = self.shared.onnx
        self.name = name
        self.nodes: list[Any] = []

    def sub(self, name: str) -> _Graph:
        return _Graph(name, self.shared)

    def const(self, name: str, value: Any, dtype: Any = np.float64) -> str:
        """A constant (defined once: a second call with the same name reuses it)."""
        array = np.asarray(value, dtype=dtype)
        known = self.shared.initializers.get(name)
        if known is None:
            self.shared.initializers[name] = self.onnx.numpy_helper.from_array(array, name)
        elif not np.array_equal(self.onnx.numpy_helper.to_array(known), array):
            raise ValueError(f"constant {name!r} defined twice with different values")
        return name

    def op(
        self,
        op_type: str,
        inputs: list[str],
        *,
        outputs: int | list[str] = 1,
        domain: str = "",
        **attributes: Any,
    ) -> Any:
        """Add a node; returns its output name (or the list of names if several)."""
        if isinstance(outputs, int):
            names = [f"{op_type.lower()}_{self.shared.count}_{i}" for i in range(outputs)]
        else:
            names = list(outputs)
        self.shared.count += 1
        self.shared.uses_ml |= domain == ML_DOMAIN
        node = self.onnx.helper.make_node(
            op_type,
            inputs,
            names,
            name=f"{op_type}_{self.shared.count}",
            domain=domain,
            **attributes,
        )
        self.nodes.append(node)
        return names[0] if len(names) == 1 else names

    def tensor(self, value: Any, dtype: Any) -> Any:
        """A tensor attribute value."""
        return self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype))

    def standard_scaler(self, scaler: Any, x: str = INPUT_NAME) -> str:
        """``(x - mean_) / scale_``, the operations of ``StandardScaler.transform``."""
        centered = x
        if scaler.with_mean:
            centered = self.op("Sub", [centered, self.const("scaler_mean", scaler.mean_)])
        if not scaler.with_std:
            return centered
        return self.op("Div", [centered, self.const("scaler_scale", scaler.scale_)])

    def graph(
        self,
        inputs: list[tuple[str, list[Any]]],
        outputs: list[tuple[str, list[Any]]],
        initializers: list[Any] | None = None,
    ) -> Any:
        """This builder's nodes as a GraphProto; inputs and outputs are float64 tensors."""
        helper, double = self.onnx.helper, self.onnx.TensorProto.DOUBLE
        return helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(name, double, shape) for name, shape in inputs],
            [helper.make_tensor_value_info(name, double, shape) for name, shape in outputs],
            initializers or [],
        )

    def model(self, n_features: int, output: str, output_shape: list[Any], doc: str) -> Any:
        """The checked model: input ``x`` (float64, [N, n_features]), one float64 output."""
        helper = self.onnx.helper
        graph = self.graph(
            [(INPUT_NAME, ["N", n_features])],
            [(output, output_shape)],
            list(self.shared.initializers.values()),
        )
        opsets = [helper.make_opsetid("", OPSET)]
        if self.shared.uses_ml:
            opsets.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            ir_version=helper.find_min_ir_version_for(opsets),
            producer_name="mlgate",
            doc_string=doc,
        )
        self.onnx.checker.check_model(model, full_check=True)
        return model


@dataclass
class _Trees:
    """Trees in the encoding of ``TreeEnsemble`` (ai.onnx.ml 5).

    Interior nodes (``nodes_*``) and leaves (``leaf_*``) are numbered apart; a branch
    points to a node or, with its ``*leafs`` flag set, to a leaf. Every split is
    ``x[feature] <= split`` -> true branch, as in scikit-learn (true = left child).
    """

    featureids: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    truenodeids: list[int] = field(default_factory=list)
    trueleafs: list[int] = field(default_factory=list)
    falsenodeids: list[int] = field(default_factory=list)
    falseleafs: list[int] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    leaf_targetids: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def add(
        self,
        *,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        is_leaf: np.ndarray,
        missing_left: np.ndarray,
        value: np.ndarray,
        target: int,
    ) -> None:
        """Add one tree given per node (node 0 is the root), its leaves voting for ``target``."""
        is_leaf = np.asarray(is_leaf, dtype=bool)
        interior = np.flatnonzero(~is_leaf)
        leaves = np.flatnonzero(is_leaf)
        where: dict[int, tuple[int, int]] = {}  # node -> (is leaf, index in nodes_*/leaf_*)
        for k, i in enumerate(interior):
            where[int(i)] = (0, len(self.featureids) + k)
        for k, i in enumerate(leaves):
            where[int(i)] = (1, len(self.leaf_weights) + k)
        if len(interior) == 0:
            # A tree that is a single leaf: one split whose both branches end in it.
            self.roots.append(len(self.featureids))
            self.featureids.append(0)
            self.splits.append(0.0)
            self.missing_true.append(0)
            self.truenodeids.append(where[0][1])
            self.trueleafs.append(1)
            self.falsenodeids.append(where[0][1])
            self.falseleafs.append(1)
        else:
            self.roots.append(where[0][1])
        for i in interior:
            self.featureids.append(int(feature[i]))
            self.splits.append(float(threshold[i]))
            self.missing_true.append(int(bool(missing_left[i])))
            true_leaf, true_index = where[int(left[i])]
            false_leaf, false_index = where[int(right[i])]
            self.truenodeids.append(true_index)
            self.trueleafs.append(true_leaf)
            self.falsenodeids.append(false_index)
            self.falseleafs.append(false_leaf)
        for i in leaves:
            self.leaf_targetids.append(target)
            self.leaf_weights.append(float(value[i]))

    def node(self, g: _Graph, x: str, n_targets: int) -> str:
        """A ``TreeEnsemble`` node on input ``x``: per target, the sum of the leaf weights."""
        return g.op(
            "TreeEnsemble",
            [x],
            domain=ML_DOMAIN,
            n_targets=n_targets,
            aggregate_function=_AGGREGATE_SUM,
            post_transform=_POST_TRANSFORM_NONE,
            tree_roots=self.roots,
            nodes_featureids=self.featureids,
            nodes_splits=g.tensor(self.splits, np.float64),
            nodes_modes=g.tensor(np.full(len(self.splits), _BRANCH_LEQ), np.uint8),
            nodes_missing_value_tracks_true=self.missing_true,
            nodes_truenodeids=self.truenodeids,
            nodes_trueleafs=self.trueleafs,
            nodes_falsenodeids=self.falsenodeids,
            nodes_falseleafs=self.falseleafs,
            leaf_targetids=self.leaf_targetids,
            leaf_weights=g.tensor(self.leaf_weights, np.float64),
        )


def _parts(pipeline: Any, final: str) -> tuple[Any, Any]:
    """The StandardScaler and the final estimator of a two-step pipeline."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not (isinstance(pipeline, Pipeline) and len(pipeline) == 2):
        raise TypeError(f"expected a fitted Pipeline(StandardScaler, {final})")
    scaler, estimator = pipeline[0], pipeline[-1]
    if not isinstance(scaler, StandardScaler) or type(estimator).__name__ != final:
        raise TypeError(f"expected a fitted Pipeline(StandardScaler, {final})")
    return scaler, estimator


# --------------------------------------------------------------------------- the models


def hist_gradient_boosting_to_onnx(model: Any) -> Any:
    """A fitted HistGradientBoostingClassifier as a graph with output ``probabilities``.

    The raw score of class k is the baseline plus the sum of the leaf values of the
    trees of class k (the leaf values already include the learning rate); the
    probabilities are their softmax. A binary model has one tree per iteration for
    class 1: class 0 gets a raw score of 0, and softmax([0, r]) = [1 - expit(r), expit(r)].
    """
    if getattr(model, "_preprocessor", None) is not None:
        raise NotImplementedError("categorical features are not supported by the ONNX export")
    n_classes = len(model.classes_)
    binary = model.n_trees_per_iteration_ == 1
    trees = _Trees()
    for iteration in model._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise NotImplementedError("categorical splits are not supported")
            trees.add(
                feature=nodes["feature_idx"],
                threshold=nodes["num_threshold"],
                left=nodes["left"],
                right=nodes["right"],
                is_leaf=nodes["is_leaf"],
                missing_left=nodes["missing_go_to_left"],
                value=nodes["value"],
                target=1 if binary else k,
            )
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    if binary:
        baseline = np.concatenate([[0.0], baseline])
    g = _Graph("ids")
    raw = trees.node(g, INPUT_NAME, n_classes)
    raw = g.op("Add", [raw, g.const("baseline", baseline.reshape(1, n_classes))])
    g.op("Softmax", [raw], outputs=[PROBABILITIES], axis=1)
    return g.model(
        model.n_features_in_,
        PROBABILITIES,
        ["N", n_classes],
        "HistGradientBoostingClassifier.predict_proba (classes in manifest order)",
    )


def isolation_forest_to_onnx(pipeline: Any) -> Any:
    """Pipeline(StandardScaler, IsolationForest) as a graph with output ``scores``.

    ``scores`` is ``score_samples`` (higher = more normal). As in scikit-learn, the
    scaled rows are rounded to float32 before they meet the tree thresholds, and every
    tree adds the depth of the leaf reached plus the average path length of the
    training rows left in it, minus 1.
    """
    from sklearn.ensemble._iforest import _average_path_length

    scaler, forest = _parts(pipeline, "IsolationForest")
    # scikit-learn indexes the features of each tree only when it sampled a subset.
    subsample = forest._max_features != forest.n_features_in_
    trees = _Trees()
    for tree, features, depths, averages in zip(
        forest.estimators_,
        forest.estimators_features_,
        forest._decision_path_lengths,
        forest._average_path_length_per_tree,
        strict=True,
    ):
        t = tree.tree_
        is_leaf = t.children_left == -1
        feature = np.where(is_leaf, 0, t.feature)
        trees.add(
            feature=np.asarray(features)[feature] if subsample else feature,
            threshold=t.threshold,
            left=t.children_left,
            right=t.children_right,
            is_leaf=is_leaf,
            missing_left=getattr(t, "missing_go_to_left", np.zeros(t.node_count)),
            value=depths + averages - 1.0,
            target=0,
        )
    denominator = len(forest.estimators_) * float(_average_path_length([forest._max_samples])[0])
    if denominator <= 0:
        raise ValueError("an isolation forest fitted on a single row cannot be exported")
    g = _Graph("isolation_forest")
    scaled = g.standard_scaler(scaler)
    as_float32 = g.op("Cast", [scaled], to=g.onnx.TensorProto.FLOAT)
    rounded = g.op("Cast", [as_float32], to=g.onnx.TensorProto.DOUBLE)
    depth = trees.node(g, rounded, 1)
    exponent = g.op("Neg", [g.op("Div", [depth, g.const("denominator", denominator)])])
    score = g.op("Pow", [g.const("two", 2.0), exponent])
    per_row = g.op("Squeeze", [score, g.const("axis_1", [1], np.int64)])
    g.op("Neg", [per_row], outputs=[SCORES])
    return g.model(
        scaler.n_features_in_, SCORES, ["N"], "IsolationForest.score_samples (higher = normal)"
    )


def _row_by_row(
    g: _Graph, n_features: int, block: Callable[[_Graph, str], str], output: str
) -> None:
    """Add ``output`` = ``block`` applied to each row of the input, memory bounded per row.

    ``block(graph, rows)`` adds the nodes computing a [rows] vector from a
    [rows, n_features] input. It is used on one row at a time: directly when the input
    has a single row (no loop overhead), else in the body of a ``Scan`` over the rows,
    so that its intermediates (e.g. distances to every training row) never hold more
    than one row, however large the batch.
    """
    axis_0 = g.const("axis_0", [0], np.int64)
    one_row = g.sub("one_row")
    one_row_out = block(one_row, INPUT_NAME)
    body = g.sub("each_row")
    row = body.op("Unsqueeze", ["row", axis_0])
    row_out = body.op("Squeeze", [block(body, row), axis_0])
    scan = g.sub("each_row_scan")
    scan_out = scan.op(
        "Scan",
        [INPUT_NAME],
        num_scan_inputs=1,
        body=body.graph([("row", [n_features])], [(row_out, [])]),
    )
    n_rows = g.op("Shape", [INPUT_NAME], start=0, end=1)
    single = g.op("Equal", [n_rows, g.const("one", [1], np.int64)])
    g.op(
        "If",
        [single],
        outputs=[output],
        then_branch=one_row.graph([], [(one_row_out, [1])]),
        else_branch=scan.graph([], [(scan_out, ["N"])]),
    )


def local_outlier_factor_to_onnx(pipeline: Any) -> Any:
    """Pipeline(StandardScaler, LocalOutlierFactor(novelty=True)) with output ``scores``.

    ``scores`` is ``score_samples`` (higher = more normal): minus the mean ratio of the
    local reachability densities of the k nearest training rows to the row's own. The
    k nearest rows are found on ``|t|^2 - 2 z.t`` (the squared distance minus the
    row's own ``|z|^2``, which does not change the order), a matrix product; ``|z|^2``
    is added back for the k chosen only. Rows are scored one at a time
    (:func:`_row_by_row`): a row needs its distances to all training rows.
    """
    scaler, lof = _parts(pipeline, "LocalOutlierFactor")
    if not lof.novelty or lof.effective_metric_ != "euclidean":
        raise NotImplementedError("only LocalOutlierFactor(novelty=True) with euclidean metric")
    fit = np.asarray(lof._fit_X, dtype=np.float64)
    k = int(lof.n_neighbors_)

    def block(g: _Graph, x: str) -> str:
        z = g.standard_scaler(scaler, x)
        cross = g.op("MatMul", [z, g.const("train_rows_times_minus_2", -2.0 * fit.T)])
        ranking = g.op("Add", [cross, g.const("train_rows_squared", (fit**2).sum(axis=1))])
        nearest, index = g.op(
            "TopK", [ranking, g.const("k", [k], np.int64)], outputs=2, axis=1, largest=0, sorted=1
        )
        own = g.op("ReduceSum", [g.op("Mul", [z, z]), g.const("axis_1", [1], np.int64)])
        squared = g.op("Max", [g.op("Add", [nearest, own]), g.const("zero", 0.0)])
        distance = g.op("Sqrt", [squared])
        k_distance = g.const("train_k_distance", lof._distances_fit_X_[:, k - 1])
        reach = g.op("Max", [distance, g.op("Gather", [k_distance, index])])
        mean_reach = g.op("ReduceMean", [reach], axes=[1], keepdims=1)
        lrd = g.op("Div", [g.const("unit", 1.0), g.op("Add", [mean_reach, g.const("eps", 1e-10)])])
        ratios = g.op("Div", [g.op("Gather", [g.const("train_lrd", lof._lrd), index]), lrd])
        mean_ratio = g.op("ReduceMean", [ratios], axes=[1], keepdims=0)
        return g.op("Neg", [mean_ratio])

    g = _Graph("local_outlier_factor")
    _row_by_row(g, scaler.n_features_in_, block, SCORES)
    return g.model(
        scaler.n_features_in_, SCORES, ["N"], "LocalOutlierFactor.score_samples (higher = normal)"
    )


_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "logistic": "Sigmoid", "identity": None}


def autoencoder_to_onnx(pipeline: Any) -> Any:
    """Pipeline(StandardScaler, MLPRegressor autoencoder) with output ``reconstruction_error``.

    The MLP reconstructs the scaled row; the output is the mean squared difference
    between the scaled row and its reconstruction (higher = more anomalous).
    """
    scaler, mlp = _parts(pipeline, "MLPRegressor")
    if mlp.out_activation_ != "identity" or mlp.activation not in _ACTIVATIONS:
        raise NotImplementedError(f"MLP activation {mlp.activation!r} is not supported")
    g = _Graph("autoencoder")
    z = g.standard_scaler(scaler)
    h = z
    last = len(mlp.coefs_) - 1
    for i, (weights, bias) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        h = g.op("Add", [g.op("MatMul", [h, g.const(f"w{i}", weights)]), g.const(f"b{i}", bias)])
        activation = _ACTIVATIONS[mlp.activation]
        if i < last and activation is not None:
            h = g.op(activation, [h])
    difference = g.op("Sub", [z, h])
    squared = g.op("Mul", [difference, difference])
    g.op("ReduceMean", [squared], outputs=[RECONSTRUCTION_ERROR], axes=[1], keepdims=0)
    return g.model(
        scaler.n_features_in_,
        RECONSTRUCTION_ERROR,
        ["N"],
        "Autoencoder mean squared reconstruction error of the scaled row",
    )


def standard_distance_to_onnx(pipeline: Any) -> Any:
    """Pipeline(StandardScaler) with output ``mean_squared_z``: the mean over features of
    the squared standardised value (higher = further from the training data's mean)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not (isinstance(pipeline, Pipeline) and len(pipeline) == 1):
        raise TypeError("expected a fitted Pipeline(StandardScaler)")
    scaler = pipeline[0]
    if not isinstance(scaler, StandardScaler):
        raise TypeError("expected a fitted Pipeline(StandardScaler)")
    g = _Graph("standard_distance")
    z = g.standard_scaler(scaler)
    squared = g.op("Mul", [z, z])
    g.op("ReduceMean", [squared], outputs=[MEAN_SQUARED_Z], axes=[1], keepdims=0)
    return g.model(
        scaler.n_features_in_,
        MEAN_SQUARED_Z,
        ["N"],
        "Mean squared standardised deviation of the row",
    )


# --------------------------------------------------------------------------- running, checking


def onnx_session(model: Any) -> Any:
    """An onnxruntime session set up like the server's (CPU, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(model: Any, x: np.ndarray) -> np.ndarray:
    """The (only) output of ``model`` on the float64 rows ``x``."""
    session = onnx_session(model)
    (out,) = session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float64)})
    return np.asarray(out, dtype=np.float64)


def graph_summary(model: Any) -> dict[str, Any]:
    """What the manifest records about a graph: opsets, input, output, node types."""
    graph = model.graph
    return {
        "ir_version": int(model.ir_version),
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        "input": f"{graph.input[0].name}: float64 [rows, {_width(model)}]",
        "output": graph.output[0].name,
        "operators": sorted(_operators(graph)),
        "exported_by": "mlgate.training.onnx_export (onnx.helper, from the fitted estimator)",
    }


def _operators(graph: Any) -> set[str]:
    """Operator types of a graph and its subgraphs."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found |= _operators(attribute.g)
    return found


def _width(model: Any) -> int:
    return int(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value)


class ExportMismatchError(RuntimeError):
    """The ONNX graph does not reproduce the scikit-learn model it was built from."""


def compare_outputs(
    name: str,
    onnx_out: np.ndarray,
    sklearn_out: np.ndarray,
    *,
    rtol: float,
    atol: float,
) -> dict[str, Any]:
    """Max abs/rel differences; :class:`ExportMismatchError` beyond ``atol + rtol * |ref|``."""
    served = np.asarray(onnx_out, dtype=np.float64)
    reference = np.asarray(sklearn_out, dtype=np.float64)
    if served.shape != reference.shape:
        raise ExportMismatchError(
            f"{name}: ONNX output has shape {served.shape}, scikit-learn {reference.shape}"
        )
    diff = np.abs(served - reference)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(reference), 1e-300)).max()) if diff.size else 0.0
    ok = np.isfinite(served).all() and bool(np.all(diff <= atol + rtol * np.abs(reference)))
    if not ok:
        raise ExportMismatchError(
            f"{name}: the ONNX graph does not reproduce scikit-learn on {len(reference)} rows: "
            f"max |difference| {max_abs:.3g}, max relative {max_rel:.3g} "
            f"(allowed: {atol:g} + {rtol:g} * |value|)"
        )
    return {
        "rows": len(reference),
        "max_abs_diff": float(f"{max_abs:.3g}"),
        "max_rel_diff": float(f"{max_rel:.3g}"),
        "tolerance": f"|onnx - sklearn| <= {atol:g} + {rtol:g} * |sklearn|",
    }
