"""The deep Q-learning agent for `ids`: a contextual bandit trained on every flow, chosen
by cross-validation, exported torch-free; reproducible from its seed; the served outputs
equal the trained networks'."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

import mlgate
from mlgate.registry.manifest import load_manifest, sha256_file
from mlgate.registry.runtimes import OnnxRuntime, load_runtime
from mlgate.training.common import classification_metrics
from mlgate.training.ids import DEFAULT_DATA, clean_features, load_ids_dataset, split_ids

torch = pytest.importorskip("torch", reason="DQN training needs the train extra (torch)")

from mlgate.explain import load_arrays  # noqa: E402
from mlgate.explain.gradients import QEnsemble  # noqa: E402
from mlgate.training.cv import nested_selection  # noqa: E402
from mlgate.training.dqn import (  # noqa: E402
    DQNConfig,
    build_network,
    calibrated_probabilities,
    class_rewards,
    encoding_bins,
    expected_calibration_error,
    export_onnx,
    fit_temperature,
    replay_class_weights,
    softmax,
)
from mlgate.training.ids_dqn import promote_better, train_ids_dqn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / DEFAULT_DATA
BUNDLED = Path(mlgate.__file__).parent / "bundled_models"
ROWS = 900
FOLDS = 3
SMALL = DQNConfig(episodes=3, flows_per_step=64, hidden=(32,), bins=4, ensemble=2, seed=0)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_rare_classes_earn_larger_rewards() -> None:
    y = np.array([0] * 90 + [1] * 10)
    w = class_rewards(y, 2, power=0.5)
    assert w[1] > w[0]
    assert np.mean(w[y]) == pytest.approx(1.0)
    # Power 0: every reward is +-1.
    np.testing.assert_allclose(class_rewards(y, 2, power=0.0), [1.0, 1.0])


def test_balanced_replay_draws_every_class_equally_often() -> None:
    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    weights = replay_class_weights(y, 3, balance=1.0)[y]
    share = [weights[y == c].sum() / weights.sum() for c in range(3)]
    np.testing.assert_allclose(share, [1 / 3] * 3)
    uniform = replay_class_weights(y, 3, balance=0.0)[y]
    np.testing.assert_allclose(uniform, 1.0)


def test_piecewise_linear_encoding_bins_follow_the_quantiles() -> None:
    z = np.column_stack([np.arange(100.0), np.zeros(100), np.r_[np.zeros(50), np.ones(50)]])
    feature, lo, width = encoding_bins(z, 4)
    # 4 bins for the ramp, none for the constant, two (median 0.5) for the binary one.
    assert feature.tolist() == [0, 0, 0, 0, 2, 2]
    np.testing.assert_allclose(lo[:4], [0, 24.75, 49.5, 74.25])
    assert (width > 0).all()


def test_tree_bins_put_their_edges_where_the_classes_change() -> None:
    rng = np.random.default_rng(0)
    z = np.column_stack([rng.uniform(0, 10, 600), np.full(600, 3.0)])
    # Class 1 on (2, 3], class 2 on (7, 10]: two label changes inside the range, the
    # second class rare (a tenth of the flows) - the balanced tree still finds it.
    y = np.where((z[:, 0] > 2) & (z[:, 0] <= 3), 1, np.where(z[:, 0] > 9.4, 2, 0))
    feature, lo, width = encoding_bins(z, 8, y, method="tree", min_flows=5)
    assert set(feature.tolist()) == {0}  # the constant feature gets no bin
    edges = np.r_[lo, lo[-1] + width[-1]]
    for change in (2.0, 3.0, 9.4):
        assert np.min(np.abs(edges - change)) < 0.05, (change, edges)
    assert edges[0] == z[:, 0].min() and edges[-1] == z[:, 0].max()
    assert len(lo) <= 8 and (width > 0).all()
    # Label-blind quantile bins ignore y; tree bins need it.
    with pytest.raises(ValueError, match="labels"):
        encoding_bins(z, 8, method="tree")
    with pytest.raises(ValueError, match="bin method"):
        encoding_bins(z, 8, y, method="kmeans")


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
    y = rng.integers(0, 7, 48)
    network = build_network(x[2:], y, 7, DQNConfig(hidden=(16,), bins=4, ensemble=2))
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
    return train_ids_dqn(
        [DATA], repo, seed=0, max_rows=ROWS, config=SMALL, folds=FOLDS, console=quiet()
    )


def test_small_training_writes_a_served_version(small_run: Path) -> None:
    manifest = load_manifest(small_run)
    assert manifest.runtime == "onnx"
    assert manifest.provenance["algorithm"].startswith("deep Q-learning")
    metrics = manifest.metrics
    assert metrics["split"] == "cross-validation"
    assert metrics["cv"]["folds"] == FOLDS and metrics["cv"]["rows"] == ROWS
    # Early stopping on CV macro-F1: the chosen episode is the best of the curve.
    chosen = metrics["selection"]["chosen"]["episodes"]
    curve = {p["episode"]: p["mean"] for p in metrics["selection"]["curve"]}
    assert len(curve) == SMALL.episodes and curve[chosen] == max(curve.values())
    assert metrics["cv"]["macro_f1"]["mean"] == pytest.approx(curve[chosen], abs=1e-6)
    assert len(manifest.provenance["episodes"]) == chosen  # the shipped agent's training
    # The nested figure: each fold at the episode the other folds chose, never above
    # the best of the mean curve (which chose on every fold's own score).
    nested = metrics["cv"]["nested"]
    assert len(nested["chosen_per_fold"]) == FOLDS
    assert set(nested["chosen_per_fold"]) <= set(curve)
    assert nested["macro_f1"]["mean"] <= curve[chosen] + 1e-9
    calibration = metrics["calibration"]
    assert calibration["temperature"] > 0
    assert 0 <= calibration["out_of_fold_ece_after"] <= 1
    assert manifest.provenance["served_as"]["max_abs_difference_to_torch"] < 1e-5
    assert manifest.explainer is not None
    assert manifest.explainer.kind == "integrated_gradients"
    assert manifest.explainer.sha256 == sha256_file(small_run / manifest.explainer.file)


def test_served_outputs_equal_the_trained_networks(small_run: Path) -> None:
    """The served graph against an independent numpy forward pass of the trained
    weights (saved by training beside it), on every training row."""
    manifest = load_manifest(small_run)
    runtime = load_runtime(small_run, manifest)
    assert isinstance(runtime, OnnxRuntime)
    dataset = load_ids_dataset([DATA], max_rows=ROWS)
    # The training class mix, which drift reports compare the predicted mix with.
    assert manifest.provenance["class_counts"] == {
        c: int((dataset.y == c).sum()) for c in manifest.classes
    }
    x = clean_features(dataset.x)
    served = runtime.run(x)
    network = QEnsemble.from_arrays(load_arrays(small_run, manifest))
    assert len(network.members) == SMALL.ensemble
    np.testing.assert_allclose(served, softmax(network.logits(network.preprocess(x))), atol=1e-5)
    predicted = np.asarray(manifest.classes, dtype=object)[served.argmax(axis=1)]
    again = classification_metrics(dataset.y, predicted, manifest.classes)
    assert again["macro_f1"] == pytest.approx(manifest.metrics["training_rows"]["macro_f1"])


def test_same_seed_same_agent(small_run: Path, tmp_path: Path) -> None:
    again = train_ids_dqn(
        [DATA], tmp_path, seed=0, max_rows=ROWS, config=SMALL, folds=FOLDS, console=quiet()
    )
    first, second = load_manifest(small_run), load_manifest(again)
    assert first.metrics == second.metrics
    assert first.provenance["episodes"] == second.provenance["episodes"]
    # Bit-identical weights.
    assert first.explainer is not None and second.explainer is not None
    assert first.explainer.sha256 == second.explainer.sha256


def _cv_version(repo: Path, version: str, mean: float, nested: float | None) -> Path:
    target = repo / "ids" / version
    target.mkdir(parents=True)
    manifest = yaml.safe_load((BUNDLED / "ids" / "1" / "manifest.yaml").read_text())
    manifest["version"] = version
    manifest["metrics"]["cv"] = {"macro_f1": {"mean": mean}}
    if nested is not None:
        manifest["metrics"]["cv"]["nested"] = {"macro_f1": {"mean": nested}}
    (target / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return target


def test_promotion_picks_the_better_cv_score(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    candidates = [_cv_version(repo, "1", 0.9, None), _cv_version(repo, "2", 0.95, None)]
    assert promote_better(repo, candidates) == "2"
    assert yaml.safe_load((repo / "ids" / "model.yaml").read_text())["aliases"]["stable"] == "2"


def test_promotion_goes_by_the_nested_figure_when_recorded(tmp_path: Path) -> None:
    """A better best-of-curve mean that does not hold up when the count is chosen inside
    each fold does not win; on a tie the first candidate (the trees) keeps stable."""
    repo = tmp_path / "repo"
    trees = _cv_version(repo, "3", 0.966, 0.965)
    agent = _cv_version(repo, "4", 0.967, 0.960)
    assert promote_better(repo, [trees, agent]) == "3"
    tie = _cv_version(repo, "5", 0.970, 0.965)
    assert promote_better(repo, [trees, tie]) == "3"
    better = _cv_version(repo, "6", 0.962, 0.966)
    assert promote_better(repo, [trees, better]) == "6"
    # A candidate without a nested figure: every candidate is compared by its mean.
    old = _cv_version(repo, "7", 0.9665, None)
    assert promote_better(repo, [trees, old]) == "7"


def test_nested_selection_scores_each_fold_at_the_others_choice() -> None:
    scores = [
        [0.90, 0.95, 0.93],  # fold 0 likes candidate 20
        [0.91, 0.92, 0.96],
        [0.92, 0.93, 0.97],
    ]
    nested = nested_selection(scores, [10, 20, 30], what="episodes")
    # Fold 0: folds 1-2 prefer 30 -> 0.93; folds 1 and 2: the others prefer 30 too.
    assert nested["chosen_per_fold"] == [30, 30, 30]
    assert nested["per_fold_macro_f1"] == [0.93, 0.96, 0.97]
    assert nested["macro_f1"]["mean"] == pytest.approx((0.93 + 0.96 + 0.97) / 3, abs=1e-6)
    # Ties go to the first (fewest) candidate; fewer than two folds is refused.
    assert nested_selection([[0.5, 0.5], [0.5, 0.5]], [1, 2], what="x")["chosen_per_fold"] == [1, 1]
    with pytest.raises(ValueError):
        nested_selection([[0.5, 0.6]], [1, 2], what="x")


def test_bundled_version_2_reproduces_its_recorded_numbers() -> None:
    """Version 2 (the first agent, 70/15/15 split) is kept as it was trained."""
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


@pytest.mark.slow
def test_cli_trains_the_agent_against_a_baseline_version(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlgate.cli.train import train as train_cli

    lines = DATA.read_text(encoding="utf-8").splitlines()[: ROWS + 1]
    data = tmp_path / "slice.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    repo = tmp_path / "repo"
    common = ["ids", "--data", str(data), "--repository", str(repo), "--folds", "3", "-q"]
    trees = CliRunner().invoke(train_cli, [*common, "--algorithm", "gbt", "--max-iter", "25"])
    assert trees.exit_code == 0, trees.output
    args = [*common, "--algorithm", "dqn", "--baseline", "1", "--version", "2", "--episodes", "1"]
    agent = CliRunner().invoke(train_cli, args)
    assert agent.exit_code == 0, agent.output
    assert sorted(p.name for p in (repo / "ids").iterdir()) == ["1", "2", "model.yaml"]
    comparison = load_manifest(repo / "ids" / "2").metrics["comparison"]
    assert comparison["baseline"]["version"] == "1"
    stable = yaml.safe_load((repo / "ids" / "model.yaml").read_text())["aliases"]["stable"]
    better = max(("1", "2"), key=lambda v: _cv_f1(repo / "ids" / v))
    assert stable == better


def _cv_f1(version_dir: Path) -> float:
    return float(load_manifest(version_dir).metrics["cv"]["macro_f1"]["mean"])
