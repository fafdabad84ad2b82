"""Runtimes: scikit-learn and ONNX artifacts load and score like the originals."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import yaml
from skl2onnx import to_onnx
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlgate.registry.manifest import ManifestError, load_manifest, sha256_file
from mlgate.registry.runtimes import available_runtimes, load_runtime
from tests.conftest import DATA_DIR, make_settings, running_app

IDS_CSV = DATA_DIR / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"


def ids_slice(n: int = 600) -> tuple[list[str], np.ndarray, list[str]]:
    """Finite rows of the project's CICIDS2017 copy: names, features, labels."""
    with IDS_CSV.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        xs, ys = [], []
        for record in reader:
            try:
                row = [float(v) for v in record[:-1]]
            except ValueError:
                continue
            if all(math.isfinite(v) for v in row):
                xs.append(row)
                ys.append(record[-1])
            if len(xs) == n:
                break
    return header[:-1], np.array(xs), ys


def write_version(
    repo: Path, name: str, artifact_name: str, manifest: dict, artifact: bytes | None = None
) -> Path:
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    if artifact is not None:
        (version_dir / artifact_name).write_bytes(artifact)
    manifest = {"name": name, "version": "1", "artifact": artifact_name, **manifest}
    manifest["artifact_sha256"] = sha256_file(version_dir / artifact_name)
    (version_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return version_dir


def write_ids_onnx(repo: Path, names: list[str], x: np.ndarray, pipeline: Any) -> Path:
    """The ids pipeline converted to a float32 ONNX classifier, as version 1 of ids-onnx."""
    onnx_model = to_onnx(
        pipeline, x[:1].astype(np.float32), options={id(pipeline[-1]): {"zipmap": False}}
    )
    classes = [str(c) for c in pipeline.classes_]
    return write_version(
        repo,
        "ids-onnx",
        "model.onnx",
        {
            "runtime": "onnx",
            "task": "classification",
            "features": [{"name": n} for n in names],
            "classes": classes,
            "attack_classes": [c for c in classes if c != "BENIGN"],
            "runtime_options": {"output": "probabilities"},
        },
        onnx_model.SerializeToString(),
    )


@pytest.fixture(scope="module")
def ids_pipeline() -> tuple[list[str], np.ndarray, list[str], object]:
    names, x, y = ids_slice()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pipeline.fit(x, y)
    return names, x, y, pipeline


def test_both_runtimes_are_registered() -> None:
    assert {"sklearn", "onnx"} <= set(available_runtimes())


def test_onnx_classifier_matches_sklearn(tmp_path: Path, ids_pipeline: tuple) -> None:
    names, x, _, pipeline = ids_pipeline
    version_dir = write_ids_onnx(tmp_path, names, x, pipeline)
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    assert runtime.input_dtype == np.float32
    got = runtime.run(x[:50].astype(np.float32))
    np.testing.assert_allclose(got, pipeline.predict_proba(x[:50]), atol=1e-4)


def test_onnx_anomaly_scores_are_negated_when_asked(tmp_path: Path) -> None:
    _, x, _ = ids_slice(300)
    forest = IsolationForest(random_state=0, n_estimators=20).fit(x[:, :5])
    onnx_model = to_onnx(
        forest, x[:1, :5].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3}
    )
    version_dir = write_version(
        tmp_path,
        "forest",
        "model.onnx",
        {
            "runtime": "onnx",
            "task": "anomaly",
            "threshold": 0.0,
            "features": [{"name": f"f{i}"} for i in range(5)],
            "runtime_options": {"output": "scores", "negate": True},
        },
        onnx_model.SerializeToString(),
    )
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    got = runtime.run(x[:40, :5].astype(np.float32))
    np.testing.assert_allclose(got, -forest.decision_function(x[:40, :5]), atol=1e-4)


async def test_onnx_model_served_over_http(tmp_path: Path, ids_pipeline: tuple) -> None:
    names, x, _, pipeline = ids_pipeline
    write_ids_onnx(tmp_path, names, x, pipeline)
    classes = [str(c) for c in pipeline.classes_]
    settings = make_settings(models={"repository": tmp_path, "default_model": "ids-onnx"})
    async with running_app(settings) as (_, client):
        response = await client.post(
            "/v1/models/ids-onnx/predict/batch", json={"instances": x[:20].tolist()}
        )
        assert response.status_code == 200
        got = [[p["probabilities"][c] for c in classes] for p in response.json()["predictions"]]
        np.testing.assert_allclose(got, pipeline.predict_proba(x[:20]), atol=1e-4)
        # A float32 model refuses numbers a float32 cannot hold, naming the feature.
        row = x[0].tolist()
        row[2] = 1e39
        response = await client.post("/v1/models/ids-onnx/predict", json={"features": row})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["details"][0]["field"] == "features[2]"
        assert "numeric range" in error["details"][0]["message"]


def test_sklearn_runtime_checks_feature_count(tmp_path: Path, ids_pipeline: tuple) -> None:
    names, _, _, pipeline = ids_pipeline
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    joblib.dump(pipeline, version_dir / "model.joblib")
    manifest = {
        "name": "m",
        "version": "1",
        "runtime": "sklearn",
        "task": "classification",
        "artifact": "model.joblib",
        "features": [{"name": n} for n in names[:10]],
        "classes": ["a", "b"],
    }
    (version_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ManifestError, match="expects 77 features, manifest lists 10"):
        load_runtime(version_dir, load_manifest(version_dir))


def test_unknown_runtime_is_named(tmp_path: Path) -> None:
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    manifest = {
        "name": "m",
        "version": "1",
        "runtime": "tensorflow",
        "task": "anomaly",
        "threshold": 1.0,
        "artifact": "model.pb",
        "features": [{"name": "x"}],
    }
    (version_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ManifestError, match="unknown runtime 'tensorflow'"):
        load_runtime(version_dir, load_manifest(version_dir))
