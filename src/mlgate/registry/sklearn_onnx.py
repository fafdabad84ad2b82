"""Serving a scikit-learn classifier through an exact ONNX twin.

scikit-learn spends most of a single-row ``predict_proba`` in Python overhead (about
100 µs for a small MLP, against 10-20 µs for the same graph in onnxruntime). At load
time the estimator is converted with skl2onnx in double precision and both are run on
rows built from the manifest's reference profile (the mean, every recorded quantile,
and rows drawn between the extreme quantiles); the twin serves only when its
probabilities match within :data:`TOLERANCE` everywhere and it picks the same class.
Otherwise scikit-learn serves, and the reason is kept for the model's info.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.registry.manifest import Manifest

log = logging.getLogger("mlgate.registry")

#: Largest |ONNX - scikit-learn| of a probability accepted as "exact".
TOLERANCE = 1e-9
CHECK_ROWS = 64
#: Only runs on a session of one thread: the server parallelises across requests.
_THREADS = 1


@dataclass(frozen=True)
class Twin:
    """An onnxruntime session that reproduces the estimator, and how well it does."""

    session: Any
    input_name: str
    output_name: str
    max_abs_diff: float
    rows_checked: int

    def run(self, x: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        return np.asarray(out, dtype=np.float64)


def check_rows(manifest: Manifest, count: int = CHECK_ROWS, seed: int = 0) -> np.ndarray | None:
    """Rows to compare on: the reference mean, each quantile, and ``count`` rows drawn
    between the lowest and highest recorded quantile (None without a reference)."""
    reference = manifest.reference
    if reference is None:
        return None
    rows = [np.asarray(reference.mean, dtype=np.float64)]
    quantiles = [np.asarray(q, dtype=np.float64) for q in reference.quantiles.values()]
    rows += quantiles
    if quantiles:
        low = np.min(quantiles, axis=0)
        high = np.max(quantiles, axis=0)
    else:
        std = np.asarray(reference.std, dtype=np.float64)
        low, high = rows[0] - 2 * std, rows[0] + 2 * std
    rng = np.random.default_rng(seed)
    rows += list(low + rng.random((count, len(low))) * (high - low))
    return np.vstack(rows)


def convert(estimator: Any, manifest: Manifest) -> tuple[Twin | None, str]:
    """(the twin, why) - None with the reason when the twin is missing or not exact."""
    rows = check_rows(manifest)
    if rows is None:
        return None, "no reference profile in the manifest to check a conversion against"
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import DoubleTensorType
    except ImportError as exc:  # pragma: no cover - both are core dependencies
        return None, f"conversion unavailable ({exc.name} is not installed)"
    n = len(manifest.features)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = to_onnx(
                estimator,
                initial_types=[("input", DoubleTensorType([None, n]))],
                options={id(estimator): {"zipmap": False}},
                target_opset={"": 17, "ai.onnx.ml": 3},
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = _THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            graph.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        return None, f"skl2onnx cannot convert it ({type(exc).__name__}: {str(exc)[:200]})"
    outputs = [o.name for o in session.get_outputs()]
    if "probabilities" not in outputs:
        return None, f"the converted graph has no probabilities output ({outputs})"
    twin = Twin(session, session.get_inputs()[0].name, "probabilities", 0.0, len(rows))
    expected = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
    try:
        got = twin.run(rows)
    except Exception as exc:
        return None, f"the converted graph fails ({type(exc).__name__})"
    if got.shape != expected.shape:
        return None, f"the converted graph returns shape {got.shape}, not {expected.shape}"
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= TOLERANCE or not np.array_equal(got.argmax(1), expected.argmax(1)):
        return None, f"not exact: max |Δ| {diff:.3g} over {len(rows)} reference rows"
    return Twin(twin.session, twin.input_name, twin.output_name, diff, len(rows)), (
        f"onnxruntime (converted from scikit-learn; max |Δ| {diff:.2g} over "
        f"{len(rows)} reference rows)"
    )
