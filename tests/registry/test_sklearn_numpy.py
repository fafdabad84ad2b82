"""scikit-learn MLPClassifiers served by numpy, read without scikit-learn: the same
probabilities to the bit, and every other artifact left to scikit-learn."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from mlgate.registry import sklearn_numpy
from mlgate.registry.manifest import load_manifest
from mlgate.registry.runtimes import load_runtime
from mlgate.registry.sklearn_numpy import numpy_mlp
from tests.conftest import make_settings, running_app
from tests.registry.test_runtimes import ids_slice
from tests.registry.test_sklearn_onnx import served_over_http, write_mlp


def fitted(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: irrelevant here
        return model.fit(x, y)


@pytest.fixture(scope="module")
def flows() -> tuple[list[str], np.ndarray, np.ndarray]:
    names, x, y = ids_slice(400)
    return names, x, np.asarray(y)


def rows_to_check(x: np.ndarray) -> np.ndarray:
    """The flows, and the same flows scaled by up to 2x either way (unseen rows)."""
    rng = np.random.default_rng(1)
    return np.vstack([x, x * rng.uniform(0.5, 2.0, size=x.shape)])


def dumped(tmp_path: Path, model: Any, name: str = "model.joblib") -> Path:
    path = tmp_path / name
    joblib.dump(model, path)
    return path


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("binary", [False, True])
def test_the_probabilities_are_scikit_learns_to_the_bit(
    tmp_path: Path, flows: tuple, activation: str, binary: bool
) -> None:
    _, x, y = flows
    labels = (y == "BENIGN") if binary else y
    model = fitted(
        MLPClassifier((24, 12), activation=activation, max_iter=40, random_state=0), x, labels
    )
    mlp, why_not = numpy_mlp(dumped(tmp_path, model), x.shape[1])
    assert mlp is not None, why_not
    rows = rows_to_check(x)
    np.testing.assert_array_equal(mlp.run(rows.copy()), model.predict_proba(rows))
    np.testing.assert_array_equal(mlp.run(rows[:1].copy()), model.predict_proba(rows[:1]))


def test_a_bare_mlp_is_served_by_numpy_at_once(tmp_path: Path, flows: tuple) -> None:
    names, x, y = flows
    model = fitted(MLPClassifier((32, 16), max_iter=60, random_state=0), x, y)
    version_dir = write_mlp(tmp_path, (names, x, y, model))
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    assert runtime.execution == "numpy (MLPClassifier, read without scikit-learn)"
    assert runtime.converted.is_set()  # nothing is made in the background
    np.testing.assert_array_equal(runtime.run(x), model.predict_proba(x))


def test_an_mlp_fitted_without_a_seed_is_served_too(tmp_path: Path, flows: tuple) -> None:
    _, x, y = flows
    model = fitted(MLPClassifier((16,), max_iter=20), x, y)  # its state holds numpy's RNG
    mlp, why_not = numpy_mlp(dumped(tmp_path, model), x.shape[1])
    assert mlp is not None, why_not
    np.testing.assert_array_equal(mlp.run(x), model.predict_proba(x))


@pytest.mark.parametrize("with_mean", [True, False])
def test_an_mlp_after_standard_scalers_is_served_by_numpy(
    tmp_path: Path, flows: tuple, with_mean: bool
) -> None:
    names, x, y = flows
    model = fitted(
        make_pipeline(
            StandardScaler(with_mean=with_mean),
            StandardScaler(with_std=False),
            MLPClassifier((32, 16), max_iter=60, random_state=0),
        ),
        x,
        y,
    )
    version_dir = write_mlp(tmp_path, (names, x, y, model))
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    assert runtime.execution == (
        "numpy (StandardScaler + StandardScaler + MLPClassifier, read without scikit-learn)"
    )
    rows = rows_to_check(x)
    np.testing.assert_array_equal(runtime.run(rows), model.predict_proba(rows))


def test_serving_it_never_imports_scikit_learn(tmp_path: Path, flows: tuple) -> None:
    names, x, y = flows
    model = fitted(MLPClassifier((32, 16), max_iter=60, random_state=0), x, y)
    version_dir = write_mlp(tmp_path, (names, x, y, model))
    np.save(tmp_path / "rows.npy", x[:10])
    script = f"""
import sys, numpy as np
from pathlib import Path
from mlgate.registry.manifest import load_manifest
from mlgate.registry.runtimes import load_runtime
d = Path({str(version_dir)!r})
runtime = load_runtime(d, load_manifest(d))
np.save({str(tmp_path / "out.npy")!r}, runtime.run(np.load({str(tmp_path / "rows.npy")!r})))
print(runtime.execution)
print(sorted(m for m in ("sklearn", "scipy", "onnxruntime", "skl2onnx") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    execution, modules = done.stdout.strip().splitlines()[-2:]
    assert execution.startswith("numpy")
    assert modules == "[]"
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model.predict_proba(x[:10]))


async def test_http_answers_are_the_estimators(tmp_path: Path, flows: tuple) -> None:
    names, x, y = flows
    model = fitted(MLPClassifier((32, 16), max_iter=60, random_state=0), x, y)
    write_mlp(tmp_path, (names, x, y, model))
    async with running_app(make_settings(models={"repository": tmp_path})) as (_, client):
        execution, got = await served_over_http(client, x[:50])
    assert execution.startswith("numpy")
    np.testing.assert_array_equal(got, model.predict_proba(x[:50]))


def test_convert_onnx_false_keeps_scikit_learn(tmp_path: Path, flows: tuple) -> None:
    names, x, y = flows
    model = fitted(MLPClassifier((8,), max_iter=20, random_state=0), x, y)
    version_dir = write_mlp(tmp_path, (names, x, y, model), runtime_options={"convert_onnx": False})
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    assert runtime.execution == "scikit-learn (convert_onnx: false)"


def test_other_artifacts_are_left_to_scikit_learn(tmp_path: Path, flows: tuple) -> None:
    _, x, y = flows
    width = x.shape[1]
    logistic = fitted(LogisticRegression(max_iter=50), x, y)
    assert numpy_mlp(dumped(tmp_path, logistic), width) == (
        None,
        "the file holds sklearn.linear_model._logistic.LogisticRegression, not an MLPClassifier",
    )
    other_step = fitted(make_pipeline(MinMaxScaler(), MLPClassifier((8,), max_iter=20)), x, y)
    assert numpy_mlp(dumped(tmp_path, other_step), width) == (None, "a MinMaxScaler in the file")
    other_end = fitted(make_pipeline(StandardScaler(), LogisticRegression(max_iter=50)), x, y)
    assert numpy_mlp(dumped(tmp_path, other_end), width) == (
        None,
        "the pipeline ends in LogisticRegression, not an MLPClassifier",
    )
    multilabel = fitted(
        MLPClassifier((8,), max_iter=20, random_state=0),
        x,
        np.column_stack([y == "BENIGN", y == "DoS"]),
    )
    mlp, why_not = numpy_mlp(dumped(tmp_path, multilabel), width)
    assert mlp is None and "2 outputs for 2 classes" in why_not
    model = fitted(MLPClassifier((8,), max_iter=20, random_state=0), x, y)
    mlp, why_not = numpy_mlp(dumped(tmp_path, model), width + 1)
    assert mlp is None and "do not chain" in why_not
    (tmp_path / "plain.joblib").write_bytes(pickle.dumps({"coefs_": []}))
    assert numpy_mlp(tmp_path / "plain.joblib", width)[0] is None
    (tmp_path / "garbage.joblib").write_bytes(b"not a pickle at all")
    assert numpy_mlp(tmp_path / "garbage.joblib", width) == (
        None,
        "no class named at the start of the file",
    )


def test_another_scikit_learn_release_is_left_to_scikit_learn(
    tmp_path: Path, flows: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, x, y = flows
    model = fitted(MLPClassifier((8,), max_iter=20, random_state=0), x, y)
    path = dumped(tmp_path, model)
    monkeypatch.setattr(sklearn_numpy.metadata, "version", lambda _: "0.0.1")
    mlp, why_not = numpy_mlp(path, x.shape[1])
    assert mlp is None and why_not.endswith("0.0.1 is installed")


class _Planted:
    """A pickle that runs a command when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_reading_runs_nothing_the_file_names(tmp_path: Path, flows: tuple) -> None:
    _, x, y = flows
    model = fitted(MLPClassifier((8,), max_iter=20, random_state=0), x, y)
    marker = tmp_path / "ran"
    alone = dumped(tmp_path, _Planted(marker), "alone.joblib")
    assert numpy_mlp(alone, 3) == (None, "the file holds posix.mkdir, not an MLPClassifier")
    # Behind an MLP, the unpickler meets the command and refuses it.
    behind = dumped(tmp_path, [model, _Planted(marker)], "behind.joblib")
    assert numpy_mlp(behind, x.shape[1]) == (None, "the file names posix.mkdir")
    assert not marker.exists()
