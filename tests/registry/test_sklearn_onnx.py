"""scikit-learn classifiers served through an exact ONNX twin (made in the background,
in a subprocess), and the fallbacks."""

from __future__ import annotations

import asyncio
import io
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from mlgate.registry import sklearn_onnx
from mlgate.registry.manifest import load_manifest
from mlgate.registry.runtimes import load_runtime
from tests.conftest import make_settings, running_app
from tests.registry.test_runtimes import ids_slice, write_version


def _reference(x: np.ndarray) -> dict[str, Any]:
    return {
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "quantiles": {
            q: np.quantile(x, float(q), axis=0).tolist() for q in ("0.01", "0.5", "0.99")
        },
    }


@pytest.fixture(scope="module")
def mlp() -> tuple[list[str], np.ndarray, list[str], Any]:
    names, x, y = ids_slice(400)
    model = make_pipeline(StandardScaler(), MLPClassifier((32, 16), max_iter=60, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: irrelevant here
        model.fit(x, y)
    return names, x, y, model


def write_mlp(repo: Path, mlp: tuple, **manifest: Any) -> Path:
    names, x, _, model = mlp
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    classes = [str(c) for c in model.classes_]
    return write_version(
        repo,
        "mlp",
        "model.joblib",
        {
            "runtime": "sklearn",
            "task": "classification",
            "features": [{"name": n} for n in names],
            "classes": classes,
            "attack_classes": [c for c in classes if c != "BENIGN"],
            "reference": _reference(x),
            **manifest,
        },
        buffer.getvalue(),
    )


def loaded(version_dir: Path) -> Any:
    """The runtime, once its conversion has finished."""
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    assert runtime.converted.wait(120)
    return runtime


def test_a_classifier_is_served_by_its_exact_twin(tmp_path: Path, mlp: tuple) -> None:
    _, x, _, model = mlp
    version_dir = write_mlp(tmp_path, mlp)
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    # scikit-learn serves until the twin is ready...
    assert runtime.execution == "scikit-learn (an ONNX twin is being made)"
    np.testing.assert_array_equal(runtime.run(x[:3]), model.predict_proba(x[:3]))
    assert runtime.converted.wait(120)
    # ...and then the twin, which is faster and exact.
    assert runtime.execution.startswith("onnxruntime (converted from scikit-learn")
    assert runtime.current_single_row_us is not None
    assert runtime.twin is not None
    rng = np.random.default_rng(1)
    rows = np.vstack([x[:50], x[:50] * rng.uniform(0.5, 2.0, size=(50, x.shape[1]))])
    np.testing.assert_allclose(runtime.run(rows), model.predict_proba(rows), rtol=0, atol=1e-9)


async def test_http_answers_are_the_estimators(tmp_path: Path, mlp: tuple) -> None:
    _, x, _, model = mlp
    write_mlp(tmp_path, mlp)
    async with running_app(make_settings(models={"repository": tmp_path})) as (app, client):
        runtime = app.state.mlgate.registry.resolve("mlp").runtime
        assert await asyncio.to_thread(runtime.converted.wait, 120)
        info = (await client.get("/v1/models/mlp")).json()
        response = await client.post(
            "/v1/models/mlp/predict/batch", json={"instances": x[:20].tolist()}
        )
    assert info["versions"][0]["execution"].startswith("onnxruntime")
    got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    np.testing.assert_allclose(got, model.predict_proba(x[:20]), rtol=0, atol=1e-9)


def test_convert_onnx_false_keeps_scikit_learn(tmp_path: Path, mlp: tuple) -> None:
    version_dir = write_mlp(tmp_path, mlp, runtime_options={"convert_onnx": False})
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert runtime.execution == "scikit-learn (convert_onnx: false)"


def test_without_a_reference_there_is_nothing_to_check_against(tmp_path: Path, mlp: tuple) -> None:
    version_dir = write_mlp(tmp_path, mlp, reference=None)
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert "no reference profile" in runtime.execution


def test_an_inexact_twin_is_refused(
    tmp_path: Path, mlp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sklearn_onnx, "TOLERANCE", -1.0)  # nothing is exact enough
    version_dir = write_mlp(tmp_path, mlp)
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert "not exact" in runtime.execution
    _, x, _, model = mlp
    np.testing.assert_array_equal(runtime.run(x[:5]), model.predict_proba(x[:5]))


def test_an_unconvertible_estimator_falls_back(tmp_path: Path, mlp: tuple) -> None:
    names, x, y, _ = mlp
    # A transformer skl2onnx has no converter for (np.abs is importable everywhere,
    # so the subprocess can load the pickle).
    model = make_pipeline(
        FunctionTransformer(np.abs), MLPClassifier((8,), max_iter=20, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    version_dir = write_mlp(tmp_path, (names, x, y, model))
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert "cannot convert" in runtime.execution
