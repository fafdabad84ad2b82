"""The deep Q-learning agent for `ids`: trains, calibrates, exports torch-free, and the
bundled version reproduces its recorded numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import mlgate
from mlgate.registry.manifest import load_manifest, sha256_file
from mlgate.registry.runtimes import OnnxRuntime, load_runtime
from mlgate.training.common import classification_metrics
from mlgate.training.ids import DEFAULT_DATA, clean_features, load_ids_dataset, split_ids

torch = pytest.importorskip("torch", reason="DQN training needs the train extra (torch)")

from mlgate.training.dqn import (  # noqa: E402
    DQNConfig,
    build_network,
    calibrated_probabilities,
    class_rewards,
    expected_calibration_error,
    export_onnx,
    fit_temperature,
    softmax,
)
from mlgate.training.ids_dqn import promote_better, train_ids_dqn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / DEFAULT_DATA
BUNDLED = Path(mlgate.__file__).parent / "bundled_models"
SMALL = DQNConfig(episodes=3, parallel_flows=64, hidden=(32,), seed=0)


def test_rare_classes_earn_larger_rewards() -> None:
    y = np.array([0] * 90 + [1] * 10)
    w = class_rewards(y, 2, power=0.5)
    assert w[1] > w[0]
    assert np.mean(w[y]) == pytest.approx(1.0)


def test_temperature_scaling_lowers_calibration_error() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(size=(2000, 3))
    logits[np.arange(2000), y] += 1.0
    overconfident = logits * 8
    temperature = fit_temperature(overconfident, y)
    assert temperature > 1
    before = expected_calibration_error(softmax(overconfident), y)
    after = expected_calibration_error(softmax(overconfident, temperature), y)
    assert after < before / 2


def test_exported_graph_equals_the_network_on_extreme_flows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 77)) * 1e6
    x[0, 3] = 1e300  # beyond float32: the graph takes its log in float64
    x[1, 5] = -3e9
    network = build_network(x[2:], 7, (16,))
    graph = export_onnx(network, 0.7, 77)
    path = tmp_path / "m.onnx"
    path.write_bytes(graph)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (served,) = session.run(None, {"x": x})
    np.testing.assert_allclose(served, calibrated_probabilities(network, 0.7, x), atol=1e-5)
    assert np.isfinite(served).all()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    return train_ids_dqn([DATA], repo, seed=0, max_rows=900, config=SMALL)


def test_small_training_writes_a_served_version(small_run: Path) -> None:
    manifest = load_manifest(small_run)
    assert manifest.runtime == "onnx"
    assert manifest.provenance["algorithm"].startswith("deep Q-learning")
    assert len(manifest.provenance["episodes"]) == 3
    calibration = manifest.metrics["calibration"]
    assert calibration["temperature"] > 0
    assert 0 <= calibration["test_ece_after"] <= 1
    assert manifest.provenance["served_as"]["max_abs_difference_to_torch"] < 1e-5
    runtime = load_runtime(small_run, manifest)
    dataset = load_ids_dataset([DATA], max_rows=900)
    # The training class mix, which drift reports compare the predicted mix with.
    assert manifest.provenance["class_counts"] == {
        c: int((dataset.y == c).sum()) for c in manifest.classes
    }
    split = split_ids(dataset.y, 0)
    proba = runtime.run(clean_features(dataset.x[split.test]))
    predicted = np.asarray(manifest.classes, dtype=object)[proba.argmax(axis=1)]
    again = classification_metrics(dataset.y[split.test], predicted, manifest.classes)
    assert again["macro_f1"] == pytest.approx(manifest.metrics["macro_f1"], abs=1e-6)


def test_same_seed_same_agent(small_run: Path, tmp_path: Path) -> None:
    again = train_ids_dqn([DATA], tmp_path, seed=0, max_rows=900, config=SMALL)
    first, second = load_manifest(small_run), load_manifest(again)
    assert first.metrics["macro_f1"] == second.metrics["macro_f1"]
    assert first.provenance["episodes"] == second.provenance["episodes"]


def test_promotion_picks_the_better_validation_score(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version, f1 in (("1", 0.9), ("2", 0.8)):
        target = repo / "ids" / version
        target.mkdir(parents=True)
        manifest = yaml.safe_load((BUNDLED / "ids" / "1" / "manifest.yaml").read_text())
        manifest["version"] = version
        manifest["metrics"]["validation"]["macro_f1"] = f1
        (target / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    assert promote_better(repo, [repo / "ids" / "1", repo / "ids" / "2"]) == "1"
    assert yaml.safe_load((repo / "ids" / "model.yaml").read_text())["aliases"]["stable"] == "1"


def test_bundled_dqn_reproduces_its_recorded_numbers() -> None:
    version_dir = BUNDLED / "ids" / "2"
    manifest = load_manifest(version_dir)
    assert manifest.artifact_sha256 == sha256_file(version_dir / manifest.artifact)
    runtime = load_runtime(version_dir, manifest)
    assert isinstance(runtime, OnnxRuntime)
    dataset = load_ids_dataset([DATA])
    split = split_ids(dataset.y, manifest.provenance["seed"])
    proba = runtime.run(clean_features(dataset.x[split.test]))
    predicted = np.asarray(manifest.classes, dtype=object)[proba.argmax(axis=1)]
    again = classification_metrics(dataset.y[split.test], predicted, manifest.classes)
    assert again["macro_f1"] == pytest.approx(manifest.metrics["macro_f1"], abs=1e-6)
    assert again["confusion_matrix"] == manifest.metrics["confusion_matrix"]
    comparison = manifest.metrics["comparison"]
    assert (
        comparison["baseline_macro_f1"] == load_manifest(BUNDLED / "ids" / "1").metrics["macro_f1"]
    )
    # Recorded honestly: the agent does not reach the target on this sample.
    assert comparison["target_met"] is False
