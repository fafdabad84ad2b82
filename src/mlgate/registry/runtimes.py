"""Model runtimes: how an artifact on disk becomes a callable on a numpy matrix.

A runtime turns a 2-D float matrix (rows x features, in manifest order) into:
- classification: an (n, n_classes) matrix of class probabilities;
- anomaly: an (n,) vector of anomaly scores, higher meaning more anomalous.

New runtimes register themselves with :func:`register_runtime`. A loader is called with
the artifact's path, the manifest and the :class:`LoadOptions` the registry was given.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlgate.registry.manifest import Manifest, ManifestError
from mlgate.registry.paths import hide_paths
from mlgate.registry.sklearn_numpy import NumpyMLP, numpy_mlp
from mlgate.registry.sklearn_onnx import Twin, cached_twin, convert_in_background
from mlgate.registry.twin_cache import TwinCache
from mlgate.registry.yaml_cache import YamlCache

log = logging.getLogger("mlgate.registry")


class Runtime(Protocol):
    """A loaded model artifact."""

    #: dtype the runtime wants its input in; inputs are converted once, before the call.
    input_dtype: np.dtype[Any]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (classification) or anomaly scores (anomaly) for the rows of x."""
        ...


@dataclass(frozen=True)
class LoadOptions:
    """What a deployment tells runtimes beyond the manifest."""

    #: Where checked ONNX twins of scikit-learn classifiers are kept (None: not kept).
    twin_cache: TwinCache | None = None
    #: Where the registry keeps parsed manifests and model files (None: not kept).
    yaml_cache: YamlCache | None = None


RuntimeLoader = Callable[[Path, Manifest, LoadOptions], Runtime]
_RUNTIMES: dict[str, RuntimeLoader] = {}


def register_runtime(name: str, loader: RuntimeLoader) -> None:
    """Make a runtime available to manifests that name it."""
    _RUNTIMES[name] = loader


def available_runtimes() -> list[str]:
    return sorted(_RUNTIMES)


def load_runtime(
    version_dir: Path, manifest: Manifest, options: LoadOptions | None = None
) -> Runtime:
    """Load the artifact of a version with the runtime its manifest names."""
    loader = _RUNTIMES.get(manifest.runtime)
    if loader is None:
        raise ManifestError(
            f"unknown runtime {manifest.runtime!r}; available: {', '.join(available_runtimes())}"
        )
    artifact = version_dir / manifest.artifact
    try:
        return loader(artifact, manifest, options or LoadOptions())
    except Exception as exc:
        # Loaders and their libraries quote the artifact's absolute path; load errors are
        # shown by the API, so they name it as the manifest does.
        reason = hide_paths(str(exc).replace(str(artifact), manifest.artifact))
        if isinstance(exc, ManifestError):
            raise ManifestError(reason) from exc
        raise ManifestError(
            f"the {manifest.runtime} runtime cannot load {manifest.artifact}: "
            f"{reason or type(exc).__name__}"
        ) from exc


class SklearnRuntime:
    """A scikit-learn estimator or pipeline saved with joblib.

    ``runtime_options.method`` picks the output:
    - ``predict_proba`` (classification, the default there);
    - ``score_samples`` / ``decision_function``: scikit-learn's "higher is more normal"
      scores, negated so that higher means more anomalous (anomaly default: score_samples);
    - ``reconstruction_error``: the last pipeline step reconstructs the output of the steps
      before it (an autoencoder); the score is the mean squared reconstruction error.

    An ``MLPClassifier`` (alone, or after ``StandardScaler`` steps in a pipeline) is
    served by numpy from the start, read without scikit-learn
    (:mod:`mlgate.registry.sklearn_numpy`). Another classifier is served through an exact
    ONNX twin once one is made and checked, a few seconds after loading, in the
    background (:mod:`mlgate.registry.sklearn_onnx`); with a twin cache
    (:class:`LoadOptions`), a twin checked at an earlier start serves at once and the
    estimator is not loaded unless something asks for it. ``runtime_options.convert_onnx:
    false`` keeps scikit-learn for both. ``execution`` says which serves and why.
    """

    input_dtype = np.dtype(np.float64)

    def __init__(self, artifact: Path, manifest: Manifest, options: LoadOptions) -> None:
        default = "predict_proba" if manifest.task == "classification" else "score_samples"
        self.method = str(manifest.runtime_options.get("method", default))
        allowed = {"predict_proba", "score_samples", "decision_function", "reconstruction_error"}
        if self.method not in allowed:
            raise ManifestError(f"sklearn runtime: unknown method {self.method!r}")
        if manifest.task == "classification" and self.method != "predict_proba":
            raise ManifestError("a classification model must use method predict_proba")
        if not artifact.is_file():
            raise ManifestError(f"artifact {artifact.name} is missing")
        self._artifact = artifact
        self._manifest = manifest
        self._estimator: Any = None
        self._estimator_lock = threading.Lock()
        self.twin: Twin | NumpyMLP | None = None
        self.current_single_row_us: float | None = None
        """The twin's single-row time once it serves (the runner's inline decision)."""
        self.converted = threading.Event()
        """Set when the ONNX conversion has finished, with or without a twin."""
        self.execution = "scikit-learn"
        convert = self.method == "predict_proba" and manifest.runtime_options.get(
            "convert_onnx", True
        )
        if convert:
            mlp, why_not = numpy_mlp(artifact, len(manifest.features))
            if mlp is not None:
                self.twin = mlp
                self.execution = f"numpy ({mlp.described}, read without scikit-learn)"
                self.converted.set()
                return
            log.debug("%s is not served by numpy: %s", manifest.name, why_not)
        cache = options.twin_cache
        if convert and cache is not None:
            twin, how = cached_twin(cache, manifest)
            if twin is not None:
                self._twin_ready(twin, how)
                return
        estimator = self.estimator  # loads and checks it
        if self.method != "predict_proba":
            self.converted.set()
        elif not convert:
            self.execution = "scikit-learn (convert_onnx: false)"
            self.converted.set()
        else:
            self.execution = "scikit-learn (an ONNX twin is being made)"
            convert_in_background(artifact, estimator, manifest, self._twin_ready, cache)

    @property
    def estimator(self) -> Any:
        """The scikit-learn estimator, loaded (and checked) on first use."""
        with self._estimator_lock:
            if self._estimator is None:
                self._estimator = self._load_estimator()
            return self._estimator

    def _load_estimator(self) -> Any:
        import joblib

        name = self._artifact.name
        # A version mismatch makes scikit-learn warn and maybe mispredict: refuse instead.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                estimator = joblib.load(self._artifact)
            except Exception as exc:
                raise ManifestError(f"cannot load {name}: {exc}") from None
        if not hasattr(estimator, self._entry_point()):
            raise ManifestError(f"estimator has no {self._entry_point()}()")
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is not None and n_features != len(self._manifest.features):
            raise ManifestError(
                f"estimator expects {n_features} features, manifest lists "
                f"{len(self._manifest.features)}"
            )
        return estimator

    def _twin_ready(self, twin: Twin | None, how: str) -> None:
        if twin is not None:
            self.current_single_row_us = twin.single_row_us
            self.twin = twin  # one assignment: calls switch over atomically
            self.execution = how
            # The twin serves from now on: the estimator (a forest can be hundreds of
            # MB) is let go; the property would load it again if it were ever needed.
            with self._estimator_lock:
                self._estimator = None
        else:
            self.execution = f"scikit-learn ({how})"
        self.converted.set()

    def _entry_point(self) -> str:
        return "predict" if self.method == "reconstruction_error" else self.method

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.twin is not None:
            return self.twin.run(x)
        if self.method == "predict_proba":
            return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
        if self.method == "reconstruction_error":
            steps = getattr(self.estimator, "steps", None)
            if steps:
                encoded = self.estimator[:-1].transform(x) if len(steps) > 1 else x
                decoded = steps[-1][1].predict(encoded)
            else:
                encoded, decoded = x, self.estimator.predict(x)
            decoded = np.asarray(decoded, dtype=np.float64).reshape(encoded.shape)
            return np.mean((np.asarray(encoded, dtype=np.float64) - decoded) ** 2, axis=1)
        scores = getattr(self.estimator, self.method)(x)
        return -np.asarray(scores, dtype=np.float64)


class OnnxRuntime:
    """An ONNX graph run by onnxruntime on the CPU.

    ``runtime_options``: ``output`` (name or index of the output to read, default: the
    first float tensor of the right shape), ``negate`` (anomaly scores where higher is
    more normal), ``threads`` (intra-op threads, default 1: the server parallelises
    across requests, not inside one small call).
    """

    def __init__(self, artifact: Path, manifest: Manifest, _: LoadOptions) -> None:
        import onnxruntime as ort

        if not artifact.is_file():
            raise ManifestError(f"artifact {artifact.name} is missing")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(manifest.runtime_options.get("threads", 1))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(artifact), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ManifestError(f"cannot load {artifact.name}: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ManifestError("ONNX runtime supports graphs with exactly one input")
        self.input_name = inputs[0].name
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        if isinstance(width, int) and width != len(manifest.features):
            raise ManifestError(
                f"ONNX input has {width} features, manifest lists {len(manifest.features)}"
            )
        self.input_dtype = np.dtype(np.float64 if "double" in inputs[0].type else np.float32)
        self.task = manifest.task
        self.negate = bool(manifest.runtime_options.get("negate", False))
        outputs = self.session.get_outputs()
        wanted = manifest.runtime_options.get("output")
        if wanted is None:
            self.output_index = self._guess_output(outputs)
        elif isinstance(wanted, int):
            self.output_index = wanted
        else:
            names = [o.name for o in outputs]
            if wanted not in names:
                raise ManifestError(f"ONNX graph has no output {wanted!r}; it has {names}")
            self.output_index = names.index(wanted)
        self.output_name = outputs[self.output_index].name
        self.execution = "onnxruntime"

    def _guess_output(self, outputs: list[Any]) -> int:
        for index, out in enumerate(outputs):
            if "tensor(float" in out.type or "tensor(double" in out.type:
                return index
        raise ManifestError("ONNX graph has no float output; set runtime_options.output")

    def run(self, x: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        out = np.asarray(out, dtype=np.float64)
        if self.task == "anomaly":
            out = out.reshape(len(x))
            return -out if self.negate else out
        return out


register_runtime("sklearn", SklearnRuntime)
register_runtime("onnx", OnnxRuntime)
