"""Serving a scikit-learn classifier through an exact ONNX twin.

scikit-learn spends most of a single-row ``predict_proba`` in Python overhead (about
100 µs for a small MLP, against 10-20 µs for the same graph in onnxruntime). After a
classifier loads, it is converted with skl2onnx in double precision - in a short-lived
subprocess at the lowest CPU priority, off the serving process: skl2onnx and onnx take
seconds and ~100 MB to import, which the server neither waits for nor keeps - and the
twin is checked here against the estimator on rows built from the manifest's reference
profile (the mean, every recorded quantile, and rows drawn between the extreme
quantiles). It serves only when every probability matches within :data:`TOLERANCE` and
the classes agree; otherwise scikit-learn keeps serving and the reason is kept for the
model's info. Until the twin is ready (a few seconds), scikit-learn serves.

A twin that passed is kept in a :class:`~mlgate.registry.twin_cache.TwinCache` with the
estimator's probabilities on the check rows; the next start of the same artifact under
the same libraries checks the kept graph against those and serves it at once, without
loading the estimator (:func:`cached_twin`).

``python -m mlgate.registry.sklearn_onnx ARTIFACT N_FEATURES`` is the subprocess: it
writes the converted graph to stdout.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.registry.manifest import Manifest
from mlgate.registry.twin_cache import TwinCache

log = logging.getLogger("mlgate.registry")

#: Largest |ONNX - scikit-learn| of a probability accepted as "exact".
TOLERANCE = 1e-9
CHECK_ROWS = 64
#: Seconds the conversion subprocess may take.
CONVERSION_TIMEOUT_S = 120.0
#: The conversion is background work: its subprocess runs at the lowest CPU priority,
#: so that on a busy (or a one-core) machine it takes what the server leaves, and a
#: starting server is ready as soon as it would be without it.
CONVERSION_NICENESS = 19
#: ``python -c`` program that lowers its own priority before importing anything, then
#: runs the module named by its first argument with the rest as arguments.
_LOW_PRIORITY_MAIN = (
    "import os, runpy, sys\n"
    "try:\n"
    "    os.nice(int(sys.argv.pop(1)))\n"
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
)


def low_priority_command(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module args...`` at :data:`CONVERSION_NICENESS`."""
    return [sys.executable, "-c", _LOW_PRIORITY_MAIN, str(CONVERSION_NICENESS), module, *args]


@dataclass(frozen=True)
class Twin:
    """An onnxruntime session that reproduces the estimator, and how well it does."""

    session: Any
    input_name: str
    output_name: str
    max_abs_diff: float
    rows_checked: int
    single_row_us: float

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


def convert_file(artifact: Path, n_features: int) -> bytes:
    """The estimator saved at ``artifact`` as a double-precision ONNX graph (this is what
    the subprocess runs; it imports skl2onnx)."""
    import joblib
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = joblib.load(artifact)
        graph = to_onnx(
            estimator,
            initial_types=[("input", DoubleTensorType([None, n_features]))],
            options={id(estimator): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    data: bytes = graph.SerializeToString()
    return data


def converted_graph(artifact: Path, n_features: int) -> tuple[bytes | None, str]:
    """Run the conversion in a subprocess: (graph, "") or (None, why)."""
    try:
        done = subprocess.run(
            low_priority_command("mlgate.registry.sklearn_onnx", str(artifact), str(n_features)),
            capture_output=True,
            timeout=CONVERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the conversion did not finish ({type(exc).__name__})"
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return None, f"skl2onnx cannot convert it ({last[0][:200]})"
    return done.stdout, ""


def checked_twin(graph: bytes, rows: np.ndarray, expected: np.ndarray) -> tuple[Twin | None, str]:
    """Load ``graph`` and check that it gives the estimator's probabilities ``expected``
    on ``rows``: (twin, how it serves) or (None, why not)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the server parallelises across requests
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            graph, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        return None, f"the converted graph does not load ({type(exc).__name__})"
    outputs = [o.name for o in session.get_outputs()]
    if "probabilities" not in outputs:
        return None, f"the converted graph has no probabilities output ({outputs})"
    twin = Twin(session, session.get_inputs()[0].name, "probabilities", 0.0, len(rows), 0.0)
    try:
        got = twin.run(rows)
    except Exception as exc:
        return None, f"the converted graph fails ({type(exc).__name__})"
    if got.shape != expected.shape:
        return None, f"the converted graph returns shape {got.shape}, not {expected.shape}"
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= TOLERANCE or not np.array_equal(got.argmax(1), expected.argmax(1)):
        return None, f"not exact: max |Δ| {diff:.3g} over {len(rows)} reference rows"
    row = rows[:1]
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        twin.run(row)
        timings.append(time.perf_counter() - started)
    single_us = float(np.median(timings) * 1e6)
    return Twin(twin.session, twin.input_name, twin.output_name, diff, len(rows), single_us), (
        f"onnxruntime (converted from scikit-learn; max |Δ| {diff:.2g} over "
        f"{len(rows)} reference rows)"
    )


def cache_key(cache: TwinCache, manifest: Manifest, rows: np.ndarray) -> str:
    assert manifest.artifact_sha256 is not None  # the registry loads only verified artifacts
    return cache.key(manifest.artifact_sha256, len(manifest.features), rows, TOLERANCE)


def cached_twin(cache: TwinCache, manifest: Manifest) -> tuple[Twin | None, str]:
    """The twin kept in ``cache`` for this artifact, checked again on the same rows
    against the probabilities the estimator gave when it was kept: (twin, how it
    serves), or (None, why not) - then the estimator loads and the twin is made."""
    rows = check_rows(manifest)
    if rows is None or manifest.artifact_sha256 is None:
        return None, "nothing to check a kept twin against"
    entry = cache.get(cache_key(cache, manifest, rows))
    if entry is None:
        return None, "no twin kept for this artifact and these library versions"
    twin, how = checked_twin(entry.graph, rows, entry.expected)
    if twin is None:
        log.warning("the kept ONNX twin of %s is not used: %s", manifest.name, how)
        return None, how
    return twin, how.replace("(converted from scikit-learn;", "(kept twin of scikit-learn;", 1)


def convert_in_background(
    artifact: Path,
    estimator: Any,
    manifest: Manifest,
    done: Callable[[Twin | None, str], None],
    cache: TwinCache | None = None,
) -> threading.Thread:
    """Convert and check in a daemon thread (the conversion itself in a subprocess);
    ``done(twin, how)`` is called with the result. A twin that passes is kept in
    ``cache`` for the next start."""

    def work() -> None:
        nonlocal estimator
        if manifest.reference is None:
            done(None, "no reference profile in the manifest to check a conversion against")
            return
        graph, why = converted_graph(artifact, len(manifest.features))
        if graph is None:
            done(None, why)
            return
        try:
            rows = check_rows(manifest)
            assert rows is not None
            expected = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
            estimator = None  # the runtime lets it go once the twin serves
            twin, how = checked_twin(graph, rows, expected)
            if twin is not None and cache is not None:
                cache.put(cache_key(cache, manifest, rows), graph, expected)
        except Exception as exc:  # a bug here must never take the model down
            log.exception("checking the ONNX twin failed")
            twin, how = None, f"the check failed ({type(exc).__name__})"
        done(twin, how)

    thread = threading.Thread(target=work, name=f"onnx-twin-{manifest.name}", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m mlgate.registry.sklearn_onnx ARTIFACT N_FEATURES\n")
        return 2
    try:
        graph = convert_file(Path(argv[0]), int(argv[1]))
    except Exception as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    out = io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "wb", closefd=False))
    out.write(graph)
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
