"""Serving a scikit-learn ``MLPClassifier`` with numpy alone, read without scikit-learn.

An MLP's ``predict_proba`` is a few matrix products and element-wise functions. Serving
it through scikit-learn costs the server scikit-learn's import and the estimator's
unpickling (about a second and 150 MB here), then an ONNX conversion in a subprocess to
get rid of scikit-learn's per-call overhead. This module reads the joblib file with an
unpickler that builds numpy arrays but no scikit-learn object - scikit-learn's classes
are replaced by plain records of their pickled state - checks that the record is a
fitted multi-class or binary ``MLPClassifier`` written by the installed scikit-learn
release, and runs scikit-learn's own forward pass (``_forward_pass_fast`` and
``predict_proba`` of that release: the same operations in the same order, so the same
floating-point results) in numpy.

A pipeline whose steps before the MLP are ``StandardScaler``s is served the same way
(their ``transform`` in numpy first). Anything else - another estimator or step, a
multi-label MLP, a release mismatch, any global the unpickler does not expect - yields
``None``, and the caller loads the artifact with joblib and scikit-learn as before.
"""

from __future__ import annotations

import io
import pickletools
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MLP_CLASSIFIER = ("sklearn.neural_network._multilayer_perceptron", "MLPClassifier")
PIPELINE = ("sklearn.pipeline", "Pipeline")
STANDARD_SCALER = ("sklearn.preprocessing._data", "StandardScaler")
_HEAD_BYTES = 4096

#: The globals an MLP's joblib file may name besides scikit-learn's own classes: numpy
#: arrays, dtypes and scalars, the estimator's random state, joblib's array wrapper.
_ALLOWED = frozenset(
    {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    }
)
#: The scikit-learn classes such a file may name: the served ones and the MLP's parts.
_SKLEARN_READ = frozenset(
    {
        MLP_CLASSIFIER,
        PIPELINE,
        STANDARD_SCALER,
        ("sklearn.preprocessing._label", "LabelBinarizer"),
        ("sklearn.neural_network._stochastic_optimizers", "AdamOptimizer"),
        ("sklearn.neural_network._stochastic_optimizers", "SGDOptimizer"),
    }
)


class _Record:
    """A scikit-learn object's pickled state, without the object."""

    qualified: tuple[str, str] = ("", "")

    def __setstate__(self, state: Any) -> None:
        self.state = state


class NotServable(Exception):
    """The artifact is not an MLP this module serves (the reason is the message)."""


def _record_class(module: str, name: str) -> type[_Record]:
    return type(name, (_Record,), {"qualified": (module, name)})


def read_record(artifact: Path) -> _Record:
    """The top-level object as a record of its class and pickled state, read without
    importing any class of scikit-learn. Raises :class:`NotServable` when the file names
    anything else."""
    from joblib.numpy_pickle import NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    class Unpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module.startswith("sklearn."):
                return _record_class(module, name)
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            raise NotServable(f"the file names {module}.{name}")

    with (
        artifact.open("rb") as raw,
        _validate_fileobject_and_memmap(raw, str(artifact), None) as (handle, _),
    ):
        if isinstance(handle, str):
            raise NotServable("a joblib file older than joblib 0.10")
        obj = Unpickler(str(artifact), handle, True).load()
    if not isinstance(obj, _Record) or not isinstance(getattr(obj, "state", None), dict):
        raise NotServable(f"the file holds a {type(obj).__name__}, not an estimator")
    return obj


def named_at_start(artifact: Path) -> list[tuple[str, str]]:
    """(module, name) of the globals a pickle file names in its first bytes, read
    without running anything; the first is its top-level object's class."""
    with artifact.open("rb") as raw:
        head = raw.read(_HEAD_BYTES)
    named: list[tuple[str, str]] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                module, _, name = arg.partition(" ")
                named.append((module, name))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                named.append((strings[-2], strings[-1]))
            elif isinstance(arg, str) and "UNICODE" in opcode.name:
                strings.append(arg)
    except Exception:  # the head ends mid-opcode, or it is not a pickle
        pass
    return named


def _softmax(x: np.ndarray) -> None:
    tmp = x - x.max(axis=1)[:, np.newaxis]
    np.exp(tmp, out=x)
    x /= x.sum(axis=1)[:, np.newaxis]


def _logistic() -> Callable[[np.ndarray], None]:
    from scipy.special import expit  # scikit-learn's own; imported only for these MLPs

    def logistic(x: np.ndarray) -> None:
        expit(x, out=x)

    return logistic


def _activation(name: str) -> Callable[[np.ndarray], None]:
    if name == "identity":
        return lambda x: None
    if name == "relu":
        return lambda x: np.maximum(x, 0, out=x)
    if name == "tanh":
        return lambda x: np.tanh(x, out=x)
    if name == "logistic":
        return _logistic()
    if name == "softmax":
        return _softmax
    raise NotServable(f"activation {name!r}")


class Standardize:
    """A fitted ``StandardScaler``'s ``transform`` in numpy."""

    def __init__(self, state: dict[str, Any], n_features: int) -> None:
        self.mean = self._vector(state, "mean_", n_features) if state.get("with_mean") else None
        self.scale = self._vector(state, "scale_", n_features) if state.get("with_std") else None

    @staticmethod
    def _vector(state: dict[str, Any], name: str, n_features: int) -> np.ndarray:
        value = state.get(name)
        if not isinstance(value, np.ndarray) or value.shape != (n_features,):
            raise NotServable(f"StandardScaler's {name} does not fit the manifest's features")
        return value

    def run(self, x: np.ndarray) -> np.ndarray:
        # transform(copy=True): a copy, then the in-place operations of that release.
        x = np.array(x, dtype=np.float64)
        if self.mean is not None:
            x -= self.mean.astype(x.dtype)
        if self.scale is not None:
            x /= self.scale.astype(x.dtype)
        return x


class NumpyMLP:
    """A fitted ``MLPClassifier``'s ``predict_proba`` in numpy, after the pipeline's
    scalers (when it was saved in a pipeline)."""

    def __init__(
        self, state: dict[str, Any], n_features: int, scalers: list[Standardize] | None = None
    ) -> None:
        self.scalers = scalers or []
        coefs, intercepts = state.get("coefs_"), state.get("intercepts_")
        if not isinstance(coefs, list) or not isinstance(intercepts, list) or not coefs:
            raise NotServable("no fitted layers")
        if len(coefs) != len(intercepts) or state.get("n_layers_") != len(coefs) + 1:
            raise NotServable("inconsistent layers")
        width = n_features
        for coef, intercept in zip(coefs, intercepts, strict=True):
            if not (
                isinstance(coef, np.ndarray)
                and isinstance(intercept, np.ndarray)
                and coef.ndim == 2
                and coef.shape[0] == width
                and intercept.shape == (coef.shape[1],)
                and coef.dtype.kind == "f"
            ):
                raise NotServable("layer shapes do not chain from the manifest's features")
            width = coef.shape[1]
        classes = state.get("classes_")
        n_outputs = state.get("n_outputs_")
        out = state.get("out_activation_")
        if not isinstance(classes, np.ndarray) or classes.ndim != 1 or n_outputs != width:
            raise NotServable("not a single-label classifier")
        if not (
            (out == "softmax" and width == len(classes) >= 3)
            or (out == "logistic" and width == 1 and len(classes) == 2)
        ):
            raise NotServable(f"output {out!r} with {width} outputs for {len(classes)} classes")
        self.coefs = coefs
        self.intercepts = intercepts
        self.hidden = _activation(str(state.get("activation")))
        self.output = _activation(str(out))
        self.binary = width == 1

    @property
    def described(self) -> str:
        return " + ".join([*(["StandardScaler"] * len(self.scalers)), "MLPClassifier"])

    def run(self, x: np.ndarray) -> np.ndarray:
        for scaler in self.scalers:
            x = scaler.run(x)
        # scikit-learn's _forward_pass_fast, then predict_proba.
        activation = x
        last = len(self.coefs) - 1
        for i, (coef, intercept) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            activation = activation @ coef
            activation += intercept
            if i != last:
                self.hidden(activation)
        self.output(activation)
        if self.binary:
            p = activation.ravel()
            return np.vstack([1 - p, p]).T
        return activation


def _estimators(top: _Record) -> list[_Record]:
    """The steps of a pipeline, or the estimator alone."""
    if top.qualified == MLP_CLASSIFIER:
        return [top]
    steps = top.state.get("steps")
    if top.qualified != PIPELINE or not isinstance(steps, list) or not steps:
        raise NotServable(f"the file holds {'.'.join(top.qualified)}, not an MLPClassifier")
    records = [step[1] for step in steps if isinstance(step, tuple) and len(step) == 2]
    if len(records) != len(steps) or not all(
        isinstance(r, _Record) and isinstance(getattr(r, "state", None), dict) for r in records
    ):
        raise NotServable("a pipeline step that is not an estimator")
    return records


def numpy_mlp(artifact: Path, n_features: int) -> tuple[NumpyMLP | None, str]:
    """(the MLP, "") when ``artifact`` is an ``MLPClassifier`` (alone, or after
    ``StandardScaler`` steps in a pipeline) this module serves exactly, else (None, why
    not)."""
    try:
        # The pickle's first global is its top-level object's class, and a pipeline's
        # steps are named soon after: a file that shows anything else there is not worth
        # importing joblib (0.15 s) for. (A compressed file is left to joblib.)
        named = named_at_start(artifact)
        if not named:
            raise NotServable("no class named at the start of the file")
        if named[0] not in (MLP_CLASSIFIER, PIPELINE):
            raise NotServable(f"the file holds {'.'.join(named[0])}, not an MLPClassifier")
        for qualified in named:
            if qualified[0].startswith("sklearn.") and qualified not in _SKLEARN_READ:
                raise NotServable(f"a {qualified[1]} in the file")
        top = read_record(artifact)
        try:
            installed = metadata.version("scikit-learn")
        except metadata.PackageNotFoundError:
            raise NotServable("scikit-learn is not installed to vouch for the file") from None
        *before, last = _estimators(top)
        for record in (top, *before, last):  # a lone MLP is top and last: checked twice
            written = record.state.get("_sklearn_version")
            if written != installed:
                raise NotServable(
                    f"a {record.qualified[1]} written by scikit-learn {written}, "
                    f"{installed} is installed"
                )
        scalers = []
        for record in before:
            if record.qualified != STANDARD_SCALER:
                raise NotServable(f"a pipeline step {record.qualified[1]}")
            scalers.append(Standardize(record.state, n_features))
        if last.qualified != MLP_CLASSIFIER:
            raise NotServable(f"the pipeline ends in {last.qualified[1]}, not an MLPClassifier")
        return NumpyMLP(last.state, n_features, scalers), ""
    except NotServable as exc:
        return None, str(exc)
    except Exception as exc:  # an unreadable file: joblib's own load says what is wrong
        return None, f"not read ({type(exc).__name__})"
