"""`mlgate.explain`: per-row feature contributions for versions of `ids`, additive where
the method promises it (TreeSHAP and exact integrated gradients)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import mlgate
from mlgate.explain import ExplainerError, explain
from mlgate.registry.manifest import load_manifest
from mlgate.registry.registry import ModelRegistry
from mlgate.registry.runtimes import load_runtime
from mlgate.training.ids import DEFAULT_DATA, clean_features, load_ids_dataset, train_ids

pytest.importorskip("shap", reason="TreeSHAP needs the train extra (shap)")
torch = pytest.importorskip("torch", reason="DQN training needs the train extra (torch)")

from mlgate.training.dqn import DQNConfig, softmax  # noqa: E402
from mlgate.training.ids_dqn import train_ids_dqn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / DEFAULT_DATA
BUNDLED = Path(mlgate.__file__).parent / "bundled_models"
ROWS = 700


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    dataset = load_ids_dataset([DATA], max_rows=ROWS)
    return clean_features(dataset.x)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("trees")
    return train_ids([DATA], repo, max_rows=ROWS, max_iter=30, folds=3, console=quiet())


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("agent")
    config = DQNConfig(episodes=2, hidden=(32, 16), bins=4, ensemble=2)
    return train_ids_dqn([DATA], repo, max_rows=ROWS, config=config, folds=3, console=quiet())


def _all_class_outputs(version_dir: Path, x: np.ndarray) -> np.ndarray:
    classes = load_manifest(version_dir).classes
    return np.column_stack(
        [[r.output for r in explain(version_dir, x, explained_class=c)] for c in classes]
    )


@pytest.mark.parametrize("which", ["trees", "agent"])
def test_contributions_add_up_to_the_output(
    which: str, request: pytest.FixtureRequest, rows: np.ndarray
) -> None:
    version_dir: Path = request.getfixturevalue(which)
    x = rows[:12]
    explained = explain(version_dir, x, top_k=5)
    assert len(explained) == 12
    for row in explained:
        assert row.base_value + row.contributions.sum() == pytest.approx(row.output, abs=1e-8)
        assert row.contributions.shape == (77,)
        assert row.explained_class == row.predicted_class
        assert len(row.top) == 5
        sizes = [abs(c.contribution) for c in row.top]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] == pytest.approx(np.abs(row.contributions).max())
    # The outputs are the served model's: their softmax is the served probability vector.
    manifest = load_manifest(version_dir)
    served = load_runtime(version_dir, manifest).run(x)
    tolerance = 1e-9 if which == "trees" else 1e-5
    np.testing.assert_allclose(softmax(_all_class_outputs(version_dir, x)), served, atol=tolerance)
    assert [r.predicted_class for r in explained] == [
        manifest.classes[i] for i in served.argmax(axis=1)
    ]


def test_tree_contributions_are_shap_values_of_the_raw_score(trees: Path, rows: np.ndarray) -> None:
    """Base value = the expected raw score over the training rows (path-dependent TreeSHAP),
    the same for every row; methods and values are reported per feature name."""
    explained = explain(trees, rows[:10], top_k=3, explained_class="BENIGN")
    assert {r.base_value for r in explained} == {explained[0].base_value}
    assert all(r.method == "tree_shap" and r.explained_class == "BENIGN" for r in explained)
    features = load_manifest(trees).feature_names
    for r, x in zip(explained, rows[:10], strict=True):
        for c in r.top:
            assert x[features.index(c.feature)] == c.value
    as_dict = explained[0].as_dict()
    assert set(as_dict) == {
        "predicted_class",
        "explained_class",
        "method",
        "output",
        "base_value",
        "top",
    }


def test_integrated_gradients_are_zero_at_the_reference(agent: Path) -> None:
    manifest = load_manifest(agent)
    assert manifest.reference is not None
    medians = np.asarray([manifest.reference.quantiles["p50"]])
    (row,) = explain(agent, medians)
    assert row.method == "integrated_gradients"
    np.testing.assert_allclose(row.contributions, 0.0, atol=1e-12)
    assert row.output == pytest.approx(row.base_value, abs=1e-12)


def test_a_loaded_model_version_is_explained_too(trees: Path, rows: np.ndarray) -> None:
    registry = ModelRegistry(trees.parent.parent, default_model="ids")
    registry.reload()
    mv = registry.resolve("ids", trees.name)
    first = explain(mv, rows[:3])
    again = explain(trees, rows[:3])
    assert [r.output for r in first] == [r.output for r in again]


def test_versions_without_an_explainer_are_refused(rows: np.ndarray) -> None:
    with pytest.raises(ExplainerError, match="has no explainer"):
        explain(BUNDLED / "ids" / "1", rows[:2])


def test_a_changed_explainer_file_is_refused(trees: Path, tmp_path: Path, rows: np.ndarray) -> None:
    copy = tmp_path / "ids" / "1"
    shutil.copytree(trees, copy)
    manifest = load_manifest(copy)
    assert manifest.explainer is not None
    with (copy / manifest.explainer.file).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ExplainerError, match="sha256"):
        explain(copy, rows[:2])


def test_bad_input_is_refused(trees: Path, rows: np.ndarray) -> None:
    with pytest.raises(ExplainerError, match="77 features"):
        explain(trees, rows[:2, :10])
    bad = rows[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ExplainerError, match="finite"):
        explain(trees, bad)
    with pytest.raises(ExplainerError, match="top_k"):
        explain(trees, rows[:2], top_k=0)
    with pytest.raises(ExplainerError, match="not a class"):
        explain(trees, rows[:2], explained_class="Nope")
