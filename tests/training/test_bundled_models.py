"""The models shipped in ``mlgate/bundled_models``: ONNX graphs that load fast, answer a row
in well under a millisecond, and reproduce their recorded numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mlgate
from mlgate.registry.manifest import (
    MANIFEST_FILE,
    load_manifest,
    load_model_file,
    sha256_file,
)
from mlgate.registry.registry import ModelRegistry
from mlgate.registry.runtimes import OnnxRuntime, load_runtime
from mlgate.training.common import binary_metrics, classification_metrics
from mlgate.training.ids import PROBA_ATOL, clean_features, load_ids_dataset, split_ids
from mlgate.training.iot import DETECTORS, SCORE_RTOL, SELECTED, SkabData, load_skab

BUNDLED = Path(mlgate.__file__).parent / "bundled_models"
ROOT = Path(__file__).resolve().parents[2]
MODELS = ["ids", *DETECTORS, SELECTED]


def _version_dir(name: str) -> Path:
    return BUNDLED / name / "1"


def _data_path(record: dict[str, object]) -> Path:
    path = ROOT / str(record["path"])
    if not path.is_file():
        pytest.skip(f"training data {record['path']} is not in this checkout")
    assert sha256_file(path) == record["sha256"], f"{path} differs from the training data"
    return path


def test_repository_holds_exactly_the_flagship_models() -> None:
    names = sorted(p.name for p in BUNDLED.iterdir() if p.is_dir() and p.name[0] != ".")
    assert names == sorted(MODELS)
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total < 15 * 1024 * 1024


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_loads(name: str) -> None:
    model_file = load_model_file(BUNDLED / name)
    assert model_file.aliases == {"stable": "1"}
    assert model_file.description
    versions = [p for p in (BUNDLED / name).iterdir() if (p / MANIFEST_FILE).exists()]
    # Version 1 of every model is checked here; later versions have tests of their own.
    assert "1" in {p.name for p in versions}
    version_dir = _version_dir(name)
    manifest = load_manifest(version_dir)
    artifact = version_dir / manifest.artifact
    assert manifest.artifact_sha256 == sha256_file(artifact)
    assert artifact.stat().st_size < 4 * 1024 * 1024
    assert manifest.created_at is not None
    assert manifest.provenance["seed"] == 0
    assert manifest.provenance["code_version"]
    assert manifest.reference is not None
    assert manifest.runtime == "onnx"
    assert manifest.artifact == "model.onnx"
    assert not list(version_dir.glob("*.joblib"))
    runtime = load_runtime(version_dir, manifest)
    assert isinstance(runtime, OnnxRuntime)
    assert runtime.input_dtype == np.float64
    assert manifest.reference.quantiles
    x = np.asarray([manifest.reference.quantiles["p50"], manifest.reference.mean])
    out = runtime.run(x)
    if manifest.task == "classification":
        assert out.shape == (2, len(manifest.classes))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
    else:
        assert out.shape == (2,)
        assert np.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_has_held_out_metrics(name: str) -> None:
    metrics = load_manifest(_version_dir(name)).metrics
    assert metrics["split"] == "test"
    keys = (
        ("accuracy", "macro_f1", "per_class", "confusion_matrix", "split_sizes")
        if name == "ids"
        else ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate", "rows")
    )
    for key in keys:
        assert key in metrics, key
    assert "validation" in metrics


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_was_proven_equal_to_sklearn(name: str) -> None:
    agreement = load_manifest(_version_dir(name)).provenance["served_as"]["agreement_with_sklearn"]
    if name == "ids":
        assert agreement["rows"] == 5050
        assert agreement["max_abs_diff"] <= PROBA_ATOL
        assert agreement["same_predicted_class"] is True
    else:
        assert set(agreement) == {"train", "validation", "test"}
        for check in agreement.values():
            assert check["max_rel_diff"] <= SCORE_RTOL
            assert check["same_alarms"] is True


def test_registry_loads_every_bundled_model_quickly() -> None:
    registry = ModelRegistry(BUNDLED, default_model="ids")
    report = registry.reload()
    assert report.failed == {}
    assert sorted(report.loaded) == sorted(MODELS)
    for entry in registry.models():
        version = entry.versions["1"]
        assert isinstance(version.runtime, OnnxRuntime)
        # Measured at warm-up: ~15-60 µs per row; generous bound for busy machines.
        assert version.single_row_us < 2000, (entry.name, version.single_row_us)


def test_ids_reproduces_its_recorded_test_metrics() -> None:
    version_dir = _version_dir("ids")
    manifest = load_manifest(version_dir)
    prov = manifest.provenance
    paths = [_data_path(record) for record in prov["data"]]
    dataset = load_ids_dataset(paths, max_rows=prov["max_rows"])
    split = split_ids(dataset.y, prov["split"]["seed"])
    assert split.sizes() == manifest.metrics["split_sizes"]
    proba = load_runtime(version_dir, manifest).run(clean_features(dataset.x[split.test]))
    predicted = np.asarray(manifest.classes, dtype=object)[proba.argmax(axis=1)]
    again = classification_metrics(dataset.y[split.test], predicted, manifest.classes)
    assert again["accuracy"] == pytest.approx(manifest.metrics["accuracy"], abs=1e-6)
    assert again["macro_f1"] == pytest.approx(manifest.metrics["macro_f1"], abs=1e-6)
    assert again["confusion_matrix"] == manifest.metrics["confusion_matrix"]


@pytest.fixture(scope="module")
def skab() -> SkabData:
    manifest = load_manifest(_version_dir(SELECTED))
    prov = manifest.provenance
    for record in prov["data"]["train"] + prov["data"]["validation"] + prov["data"]["test"]:
        _data_path(record)
    return load_skab(ROOT / "data" / "skab", max_rows_per_file=prov["split"]["max_rows_per_file"])


@pytest.mark.parametrize("name", [*DETECTORS, SELECTED])
def test_iot_reproduces_its_recorded_test_metrics(name: str, skab: SkabData) -> None:
    version_dir = _version_dir(name)
    manifest = load_manifest(version_dir)
    assert manifest.threshold is not None
    runtime = load_runtime(version_dir, manifest)
    x_test, y_test = SkabData.stack(skab.test)
    again = binary_metrics(y_test, runtime.run(x_test) >= manifest.threshold)
    for key in ("tp", "fp", "tn", "fn"):
        assert again[key] == manifest.metrics[key], key
    assert again["f1"] == pytest.approx(manifest.metrics["f1"], abs=1e-6)


def test_iot_is_the_best_detector_on_validation() -> None:
    selected = load_manifest(_version_dir(SELECTED))
    source = selected.provenance["selected_from"]
    f1 = {n: load_manifest(_version_dir(n)).metrics["validation"]["f1"] for n in DETECTORS}
    assert f1[source] == max(f1.values())
    assert selected.artifact_sha256 == load_manifest(_version_dir(source)).artifact_sha256
