"""Training the ``ids`` classifier on a slice of the CICIDS2017 sample, and its ONNX export."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from mlgate.cli.train import train as train_cli
from mlgate.registry.manifest import load_manifest, load_model_file, sha256_file
from mlgate.registry.runtimes import OnnxRuntime, load_runtime
from mlgate.training.common import (
    DataError,
    MissingDependencyError,
    VersionExistsError,
    classification_metrics,
    next_version,
    stratified_split,
)
from mlgate.training.ids import (
    FEATURE_COLUMNS,
    HGB_PARAMS,
    PROBA_ATOL,
    clean_features,
    feature_specs,
    load_ids_dataset,
    snake_alias,
    split_ids,
    train_ids,
)
from mlgate.training.onnx_export import hist_gradient_boosting_to_onnx, run_onnx

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
MAX_ROWS = 700
MAX_ITER = 60
FOLDS = 3
CLASSES = ["BENIGN", "Bot", "BruteForce", "DoS", "Infiltration", "PortScan", "WebAttack"]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("ids-repo")
    return _train(repo)


def _train(repo: Path, **kwargs: Any) -> Path:
    options: dict[str, Any] = {
        "seed": 0,
        "max_rows": MAX_ROWS,
        "max_iter": MAX_ITER,
        "folds": FOLDS,
        "console": quiet(),
    }
    return train_ids([DATA], repo, **(options | kwargs))


def _rows() -> tuple[np.ndarray, np.ndarray]:
    dataset = load_ids_dataset([DATA], max_rows=MAX_ROWS)
    return clean_features(dataset.x), dataset.y


def test_writes_a_valid_version(trained: Path) -> None:
    assert trained.name == "1"
    assert trained.parent.name == "ids"
    manifest = load_manifest(trained)
    assert manifest.runtime == "onnx"
    assert manifest.artifact == "model.onnx"
    assert manifest.task == "classification"
    assert manifest.runtime_options == {"output": "probabilities"}
    runtime = load_runtime(trained, manifest)
    assert isinstance(runtime, OnnxRuntime)
    assert runtime.input_dtype == np.float64  # CICFlowMeter values of 1e9+ are not rounded
    assert manifest.artifact_sha256 == sha256_file(trained / manifest.artifact)
    assert manifest.created_at is not None
    assert manifest.classes == CLASSES
    assert manifest.attack_classes == [c for c in CLASSES if c != "BENIGN"]
    assert manifest.feature_names == list(FEATURE_COLUMNS)
    assert len(manifest.features) == 77
    assert manifest.reference is not None
    assert len(manifest.reference.mean) == 77
    assert min(manifest.reference.std) > 0
    assert set(manifest.reference.quantiles) == {"p01", "p50", "p99"}
    assert load_model_file(trained.parent).aliases == {"stable": "1"}
    # No temporary directories left behind.
    assert sorted(p.name for p in trained.parent.iterdir()) == ["1", "model.yaml"]
    # The TreeSHAP explainer is written beside the graph, with its checksum.
    assert manifest.explainer is not None
    assert manifest.explainer.kind == "tree_shap"
    assert manifest.explainer.sha256 == sha256_file(trained / manifest.explainer.file)


def test_provenance_records_data_split_and_code(trained: Path) -> None:
    prov = load_manifest(trained).provenance
    (record,) = prov["data"]
    assert record["file"] == DATA.name
    assert record["sha256"] == sha256_file(DATA)
    assert record["rows"] == 5050
    assert record["rows_used"] == MAX_ROWS
    assert prov["seed"] == 0
    assert prov["cv_folds"] == {"folds": FOLDS, "seed": 0, "method": "StratifiedKFold(shuffle)"}
    assert prov["rows_used"] == MAX_ROWS
    assert prov["code_version"]
    assert "Infinity" in prov["cleaning"]


def test_served_outputs_equal_the_trained_model(trained: Path) -> None:
    """The reloaded graph equals a model refitted with the recorded parameters (and so
    the model training fitted: same data, same seed), and reproduces the recorded
    figures on the training rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    manifest = load_manifest(trained)
    runtime = load_runtime(trained, manifest)
    x, y = _rows()
    proba = runtime.run(x)
    assert proba.shape == (len(y), 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    refit = HistGradientBoostingClassifier(**manifest.provenance["params"]).fit(x, y)
    np.testing.assert_allclose(proba, refit.predict_proba(x), rtol=0, atol=PROBA_ATOL)
    predicted = np.asarray(manifest.classes, dtype=object)[proba.argmax(axis=1)]
    again = classification_metrics(y, predicted, manifest.classes)
    assert again["macro_f1"] == pytest.approx(manifest.metrics["training_rows"]["macro_f1"])


def test_training_proves_the_onnx_graph_equals_sklearn(trained: Path) -> None:
    served_as = load_manifest(trained).provenance["served_as"]
    assert served_as["output"] == "probabilities"
    assert served_as["opsets"] == {"ai.onnx": 17, "ai.onnx.ml": 5}
    agreement = served_as["agreement_with_sklearn"]
    assert agreement["rows"] == MAX_ROWS
    assert agreement["max_abs_diff"] <= PROBA_ATOL
    assert agreement["same_predicted_class"] is True


def _fit_hgb(x: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**{**HGB_PARAMS, **params}).fit(x, y)


def _assert_same_proba(model: Any, x: np.ndarray) -> None:
    served = run_onnx(hist_gradient_boosting_to_onnx(model), x)
    expected = model.predict_proba(x)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(served.argmax(axis=1), expected.argmax(axis=1))


@pytest.fixture(scope="module")
def fitted() -> tuple[Any, np.ndarray, np.ndarray]:
    """A small model fitted on the train part of the slice, and the held-out rows."""
    dataset = load_ids_dataset([DATA], max_rows=MAX_ROWS)
    x, y = clean_features(dataset.x), dataset.y
    split = split_ids(y, 0)
    model = _fit_hgb(x[split.train], y[split.train], max_iter=20, random_state=0)
    return model, x[split.validation], x[split.test]


def test_onnx_export_equals_sklearn_on_held_out_rows(
    fitted: tuple[Any, np.ndarray, np.ndarray],
) -> None:
    model, x_val, x_test = fitted
    _assert_same_proba(model, x_test)
    _assert_same_proba(model, x_val)


def test_onnx_export_keeps_large_values_exact(
    fitted: tuple[Any, np.ndarray, np.ndarray],
) -> None:
    """Rows one float64 step either side of every threshold above 1e6 take sklearn's branch.

    Float32 keeps 7 digits: at these magnitudes it would move such rows across the split.
    """
    model, x, _ = fitted
    splits = {
        (int(node["feature_idx"]), float(node["num_threshold"]))
        for iteration in model._predictors
        for predictor in iteration
        for node in predictor.nodes
        if not node["is_leaf"] and abs(node["num_threshold"]) > 1e6
    }
    assert splits, "expected splits on large CICFlowMeter values"
    rows = []
    for i, (feature, threshold) in enumerate(sorted(splits)):
        for value in (np.nextafter(threshold, -np.inf), threshold, np.nextafter(threshold, np.inf)):
            row = x[i % len(x)].copy()
            row[feature] = value
            rows.append(row)
    crafted = np.asarray(rows)
    assert not np.array_equal(crafted.astype(np.float32).astype(np.float64), crafted)
    _assert_same_proba(model, crafted)


def test_onnx_export_of_binary_and_single_leaf_models() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)) * [1.0, 1e9, 10.0, 1.0]
    y = np.where(x[:, 0] + x[:, 1] / 1e9 > 0, "attack", "BENIGN")
    binary = _fit_hgb(x, y, max_iter=15, class_weight=None, random_state=0)
    assert binary.n_trees_per_iteration_ == 1
    _assert_same_proba(binary, x)
    # Leaves must hold all rows: every tree is a single leaf (baseline only).
    y3 = np.array(["a", "b", "c"])[rng.integers(0, 3, size=300)]
    stumps = _fit_hgb(x, y3, max_iter=3, min_samples_leaf=300, random_state=0)
    assert all(len(p.nodes) == 1 for it in stumps._predictors for p in it)
    _assert_same_proba(stumps, x)


def test_missing_onnx_is_a_clear_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'mlgate\[train\]'"):
        train_ids([DATA], tmp_path / "repo", max_rows=MAX_ROWS, console=quiet())
    assert not (tmp_path / "repo").exists()
    result = CliRunner().invoke(
        train_cli, ["ids", "--data", str(DATA), "--repository", str(tmp_path / "repo"), "-q"]
    )
    assert result.exit_code == 1
    assert "mlgate[train]" in result.output


def test_cross_validated_metrics_present(trained: Path) -> None:
    metrics = load_manifest(trained).metrics
    assert metrics["split"] == "cross-validation"
    cv = metrics["cv"]
    assert cv["folds"] == FOLDS and cv["rows"] == MAX_ROWS
    f1 = cv["macro_f1"]
    assert 0 < f1["min"] <= f1["mean"] <= f1["max"] <= 1.0
    assert f1["std"] >= 0
    assert len(cv["per_fold_macro_f1"]) == FOLDS
    assert f1["mean"] == pytest.approx(np.mean(cv["per_fold_macro_f1"]), abs=1e-6)
    # The headline figures (what model listings show) are the CV means.
    assert metrics["macro_f1"] == f1["mean"]
    assert metrics["accuracy"] == cv["accuracy"]["mean"]
    assert set(cv["per_class"]) == set(CLASSES)
    for row in cv["per_class"].values():
        assert set(row) == {"precision", "recall", "f1", "support"}
        assert set(row["f1"]) == {"mean", "std", "min", "max"}
    matrix = np.array(cv["out_of_fold"]["confusion_matrix"]["matrix"])
    assert matrix.shape == (7, 7)
    assert matrix.sum() == MAX_ROWS
    # The chosen iteration count is the best point of the recorded CV curve.
    selection = metrics["selection"]
    chosen = selection["chosen"]["boosting_iterations"]
    assert chosen <= MAX_ITER
    best = max(point["mean"] for point in selection["curve"])
    assert [p["mean"] for p in selection["curve"] if p["iterations"] == chosen] == [best]
    assert f1["mean"] == pytest.approx(best, abs=1e-6)
    # Nested: each fold scored at the count the other folds chose (never above the best).
    nested = cv["nested"]
    assert set(nested["chosen_per_fold"]) <= {p["iterations"] for p in selection["curve"]}
    assert len(nested["per_fold_macro_f1"]) == cv["folds"]
    assert nested["macro_f1"]["mean"] <= best + 1e-9


def test_same_seed_gives_identical_metrics_and_force_overwrites(
    trained: Path, tmp_path: Path
) -> None:
    again = _train(tmp_path)
    assert again == tmp_path / "ids" / "1"
    assert load_manifest(again).metrics == load_manifest(trained).metrics
    first, second = load_manifest(trained), load_manifest(again)
    assert first.artifact_sha256 == second.artifact_sha256
    assert first.explainer == second.explainer
    with pytest.raises(VersionExistsError, match="force"):
        train_ids([DATA], tmp_path, version="1", max_rows=MAX_ROWS, console=quiet())
    third = _train(tmp_path, version="1", force=True)
    assert third == again
    assert load_manifest(third).metrics == load_manifest(trained).metrics
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == ["1", "model.yaml"]


def test_refuses_to_overwrite_before_training(trained: Path) -> None:
    with pytest.raises(ValueError, match="already exists"):
        train_ids([DATA], trained.parent.parent, version="1", console=quiet())


def test_next_version(tmp_path: Path) -> None:
    for v in ("1", "3", "x-dev"):
        (tmp_path / "ids" / v).mkdir(parents=True)
    assert next_version(tmp_path, ["ids"]) == "4"
    assert next_version(tmp_path, ["other"]) == "1"


def test_missing_file_is_a_helpful_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist.*--data"):
        train_ids([tmp_path / "nope.csv"], tmp_path / "repo", console=quiet())


def test_wrong_columns_are_named(tmp_path: Path) -> None:
    lines = DATA.read_text(encoding="utf-8").splitlines()[:50]
    header = lines[0].split(",")
    drop = header.index("Flow Bytes/s")
    bad = [",".join(c for j, c in enumerate(line.split(",")) if j != drop) for line in lines]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing 1 required column.*'Flow Bytes/s'"):
        train_ids([path], tmp_path / "repo", console=quiet())
    assert not (tmp_path / "repo" / "ids").exists()


def test_non_numbers_are_reported_with_their_row(tmp_path: Path) -> None:
    lines = DATA.read_text(encoding="utf-8").splitlines()[:50]
    cells = lines[3].split(",")
    cells[0] = "abc"
    lines[3] = ",".join(cells)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 3, column 'Flow Duration': 'abc'"):
        load_ids_dataset([path])


def test_clean_features_fixed_rule() -> None:
    x = np.array([[1.5, np.inf, -np.inf, np.nan, -1.0, 0.0]])
    out = clean_features(x)
    np.testing.assert_array_equal(out, [[1.5, -1.0, -1.0, 0.0, -1.0, 0.0]])
    assert np.isnan(x[0, 3])  # input untouched
    np.testing.assert_array_equal(clean_features(x), out)


def test_cleaning_covers_the_sample_file() -> None:
    dataset = load_ids_dataset([DATA])
    assert dataset.x.shape == (5050, 77)
    assert not np.isfinite(dataset.x).all()
    assert np.isfinite(clean_features(dataset.x)).all()


def test_feature_aliases() -> None:
    specs = {s["name"]: s for s in feature_specs()}
    assert specs["Flow Duration"]["aliases"] == ["flow_duration"]
    assert specs["Flow Bytes/s"]["aliases"] == ["flow_bytes_per_s"]
    assert specs["Fwd Header Length.1"]["aliases"] == ["fwd_header_length_1"]
    assert snake_alias("Init_Win_bytes_forward") == "init_win_bytes_forward"
    aliases = [a for s in specs.values() for a in s["aliases"]]
    assert all(len(s["aliases"]) == 1 for s in specs.values())
    assert len(set(aliases)) == 77
    assert not set(aliases) & set(specs)
    assert all(a == a.lower() and " " not in a for a in aliases)


def test_stratified_split_is_seeded_and_keeps_rare_classes() -> None:
    y = np.array(["a"] * 100 + ["b"] * 10 + ["c"] * 3 + ["d"])
    first = stratified_split(y, seed=1)
    second = stratified_split(y, seed=1)
    other = stratified_split(y, seed=2)
    for a, b in zip(
        (first.train, first.validation, first.test),
        (second.train, second.validation, second.test),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.test, other.test)
    assert first.sizes() == {"train": 78, "validation": 18, "test": 18}
    every = np.concatenate([first.train, first.validation, first.test])
    assert sorted(every.tolist()) == list(range(len(y)))
    for part in (first.train, first.validation, first.test):
        assert {"a", "b", "c"} <= set(y[part].tolist())
    assert "d" in set(y[first.train].tolist())


def test_cli_trains_a_slice(tmp_path: Path) -> None:
    lines = DATA.read_text(encoding="utf-8").splitlines()[: MAX_ROWS + 1]
    data = tmp_path / "slice.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    repo = tmp_path / "repo"
    args = ["ids", "--data", str(data), "--repository", str(repo), "--max-iter", "40", "-q"]
    args += ["--algorithm", "gbt", "--folds", "3"]
    result = CliRunner().invoke(train_cli, args)
    assert result.exit_code == 0, result.output
    assert "CV macro-F1" in result.output
    manifest = load_manifest(repo / "ids" / "1")
    assert manifest.provenance["data"][0]["rows"] == MAX_ROWS
    again = CliRunner().invoke(train_cli, [*args, "--version", "1"])
    assert again.exit_code == 2
    assert "--force" in again.output


def test_cli_missing_data_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        train_cli, ["ids", "--data", str(tmp_path / "missing.csv"), "--repository", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_cli_baseline_goes_with_the_dqn_only(tmp_path: Path) -> None:
    args = ["ids", "--data", str(DATA), "--repository", str(tmp_path), "-q"]
    result = CliRunner().invoke(train_cli, [*args, "--algorithm", "gbt", "--baseline", "1"])
    assert result.exit_code == 2
    assert "--algorithm dqn" in result.output
    missing = CliRunner().invoke(train_cli, [*args, "--algorithm", "dqn", "--baseline", "7"])
    assert missing.exit_code == 2
    assert "is not a version" in missing.output
