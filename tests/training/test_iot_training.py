"""Training the IoT anomaly detectors on a thinned copy of SKAB, and their ONNX export."""

from __future__ import annotations

import io
import shutil
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
    best_f1_threshold,
)
from mlgate.training.iot import (
    ALL_COLUMNS,
    DETECTORS,
    DEVICE_DISTANCE,
    ISOLATION_FOREST,
    SCORE_RTOL,
    SELECTED,
    SPECS,
    SkabData,
    anomaly_scores,
    load_skab,
    served_scores,
    train_iot,
)
from mlgate.training.iot_devices import DetectorSearch

ROOT = Path(__file__).resolve().parents[2]
SKAB = ROOT / "data" / "skab"
ROWS = 150
NAMES = [*DETECTORS, SELECTED, DEVICE_DISTANCE]
FEATURES = ["temperature", "vibration", "pressure", "flow_rate", "current"]
ALIASES = [
    ["Temperature"],
    ["Accelerometer1RMS"],
    ["Pressure"],
    ["Volume Flow RateRMS"],
    ["Current"],
]


#: A small per-device detector search (the full one takes about two minutes).
SEARCH = DetectorSearch(
    methods=("mahalanobis", "mset"),
    smoothing=(5,),
    quantiles=(1.0,),
    margins=(1.0, 1.5),
    debounce=((1, 1),),
    folds=3,
)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    repo = tmp_path_factory.mktemp("iot-repo")
    dirs = train_iot(
        SKAB, repo, seed=0, max_rows_per_file=ROWS, console=quiet(), device_search=SEARCH
    )
    return dict(zip(NAMES, dirs, strict=True))


@pytest.fixture(scope="module")
def data() -> SkabData:
    return load_skab(SKAB, max_rows_per_file=ROWS)


def test_writes_four_valid_models(trained: dict[str, Path]) -> None:
    for name, version_dir in trained.items():
        assert version_dir == version_dir.parent.parent / name / "1"
        manifest = load_manifest(version_dir)
        assert manifest.task == "anomaly"
        assert manifest.runtime == "onnx"
        assert manifest.artifact == "model.onnx"
        runtime = load_runtime(version_dir, manifest)
        assert isinstance(runtime, OnnxRuntime)
        assert runtime.input_dtype == np.float64
        if name == DEVICE_DISTANCE:  # all eight sensors
            assert manifest.feature_names == [*FEATURES, "vibration_2", "thermocouple", "voltage"]
        else:
            assert manifest.feature_names == FEATURES
            assert [f.aliases for f in manifest.features] == ALIASES
        assert all(f.unit and f.description for f in manifest.features)
        assert manifest.threshold is not None
        assert manifest.score_scale is not None and manifest.score_scale > 0
        assert manifest.artifact_sha256 == sha256_file(version_dir / manifest.artifact)
        assert load_model_file(version_dir.parent).aliases == {"stable": "1"}
    options = {n: load_manifest(d).runtime_options for n, d in trained.items()}
    # The graphs of the isolation forest and LOF output score_samples (higher = normal).
    assert options["iot-isolation-forest"] == {"output": "scores", "negate": True}
    assert options["iot-lof"] == {"output": "scores", "negate": True}
    assert options["iot-autoencoder"] == {"output": "reconstruction_error"}
    assert options[DEVICE_DISTANCE] == {"output": "mean_squared_z"}


def test_training_proves_the_onnx_graphs_equal_sklearn(
    trained: dict[str, Path], data: SkabData
) -> None:
    rows = {
        "train": len(data.train.x),
        "validation": sum(len(r.x) for r in data.validation),
        "test": sum(len(r.x) for r in data.test),
    }
    for version_dir in trained.values():
        agreement = load_manifest(version_dir).provenance["served_as"]["agreement_with_sklearn"]
        assert set(agreement) == set(rows)
        for part, check in agreement.items():
            assert check["rows"] == rows[part]
            assert check["max_rel_diff"] <= SCORE_RTOL
            assert check["same_alarms"] is True


@pytest.fixture(scope="module")
def fitted(data: SkabData, data8: SkabData) -> dict[str, Any]:
    fits = {name: SPECS[name].fit(data.train.x, 0) for name in DETECTORS}
    fits[DEVICE_DISTANCE] = SPECS[DEVICE_DISTANCE].fit(data8.train.x, 0)
    return fits


@pytest.fixture(scope="module")
def data8() -> SkabData:
    return load_skab(SKAB, max_rows_per_file=ROWS, columns=ALL_COLUMNS)


@pytest.mark.parametrize("name", [*DETECTORS, DEVICE_DISTANCE])
def test_onnx_export_equals_sklearn_on_held_out_rows(
    name: str, fitted: dict[str, Any], data: SkabData, data8: SkabData
) -> None:
    if name == DEVICE_DISTANCE:
        data = data8
    spec = SPECS[name]
    graph = spec.export(fitted[name])
    for runs in (data.validation, data.test):
        x, _ = SkabData.stack(runs)
        # Served score (graph output, negated if the manifest says so) = the sklearn score.
        expected = anomaly_scores(fitted[name], spec.method, x)
        np.testing.assert_allclose(served_scores(spec, graph, x), expected, rtol=1e-12)
    # One row at a time (the server's hot path; LOF takes another branch of its graph).
    x_test, _ = SkabData.stack(data.test)
    one_by_one = [served_scores(spec, graph, x_test[i : i + 1])[0] for i in range(0, 150, 10)]
    expected = anomaly_scores(fitted[name], spec.method, x_test[0:150:10])
    np.testing.assert_allclose(one_by_one, expected, rtol=1e-12)


def test_isolation_forest_export_rounds_to_float32_like_sklearn(
    fitted: dict[str, Any], data: SkabData
) -> None:
    """scikit-learn's trees see the scaled rows as float32; the graph rounds them the same way.

    Rows are built so that their scaled value lies within one float32 step of a split.
    """
    pipeline = fitted[ISOLATION_FOREST]
    scaler, forest = pipeline[0], pipeline[-1]
    rows, crosses = [], 0
    for tree in forest.estimators_[:20]:
        feature, threshold = int(tree.tree_.feature[0]), float(tree.tree_.threshold[0])
        step = float(np.spacing(np.float32(threshold)))
        for k in np.linspace(-2, 2, 17):
            z = np.zeros(5)
            z[feature] = threshold + k * step
            row = z * scaler.scale_ + scaler.mean_
            rows.append(row)
            scaled = (row - scaler.mean_) / scaler.scale_
            crosses += (np.float32(scaled[feature]) <= threshold) != (scaled[feature] <= threshold)
    assert crosses > 0  # some rows change sides when rounded to float32
    x = np.asarray(rows)
    spec = SPECS[ISOLATION_FOREST]
    expected = anomaly_scores(pipeline, spec.method, x)
    np.testing.assert_allclose(served_scores(spec, spec.export(pipeline), x), expected, rtol=1e-12)


def test_missing_onnx_is_a_clear_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'mlgate\[train\]'"):
        train_iot(
            SKAB, tmp_path / "repo", max_rows_per_file=40, console=quiet(), device_search=SEARCH
        )
    assert not (tmp_path / "repo").exists()


def test_selected_model_is_a_copy_of_the_best_detector(trained: dict[str, Path]) -> None:
    selected = load_manifest(trained[SELECTED])
    source_name = selected.provenance["selected_from"]
    assert source_name in DETECTORS
    source = load_manifest(trained[source_name])
    assert selected.artifact_sha256 == source.artifact_sha256
    assert selected.threshold == source.threshold
    assert selected.metrics == source.metrics
    best = max(load_manifest(trained[n]).metrics["validation"]["f1"] for n in DETECTORS)
    assert source.metrics["validation"]["f1"] == best


def test_models_load_and_thresholds_reproduce_recorded_counts(
    trained: dict[str, Path], data: SkabData, data8: SkabData
) -> None:
    for name, version_dir in trained.items():
        sensors = data8 if name == DEVICE_DISTANCE else data
        x_val, y_val = SkabData.stack(sensors.validation)
        x_test, y_test = SkabData.stack(sensors.test)
        manifest = load_manifest(version_dir)
        runtime = load_runtime(version_dir, manifest)
        assert manifest.threshold is not None
        for x, y, recorded in (
            (x_val, y_val, manifest.metrics["validation"]),
            (x_test, y_test, manifest.metrics),
        ):
            scores = runtime.run(x)
            assert scores.shape == (len(x),)
            assert np.isfinite(scores).all()
            alarm = scores >= manifest.threshold
            assert int(np.sum(alarm & (y == 1))) == recorded["tp"]
            assert int(np.sum(alarm & (y == 0))) == recorded["fp"]
            assert int(np.sum(~alarm & (y == 0))) == recorded["tn"]
            assert int(np.sum(~alarm & (y == 1))) == recorded["fn"]
        # The threshold is the F1-optimal cut on validation.
        _, best = best_f1_threshold(runtime.run(x_val), y_val)
        assert manifest.metrics["validation"]["f1"] == pytest.approx(best, abs=1e-6)


def test_held_out_metrics_present(
    trained: dict[str, Path], data: SkabData, data8: SkabData
) -> None:
    test_rows = sum(len(r.x) for r in data.test)
    for name, version_dir in trained.items():
        if name == DEVICE_DISTANCE:
            data = data8
        manifest = load_manifest(version_dir)
        metrics = manifest.metrics
        assert metrics["split"] == "test"
        assert metrics["rows"] == test_rows
        for key in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate"):
            assert 0.0 <= metrics[key] <= 1.0
        assert 0.3 < metrics["anomaly_share"] < 0.4
        assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == test_rows
        assert set(metrics["per_file"]) == {f"other/{i}.csv" for i in range(1, 15)}
        prov = manifest.provenance
        assert prov["split"]["rows"]["test"] == test_rows
        assert len(prov["data"]["validation"]) == 16
        assert prov["data"]["train"][0]["sha256"] == sha256_file(
            SKAB / "anomaly-free" / "anomaly-free.csv"
        )
        assert manifest.reference is not None
        np.testing.assert_allclose(manifest.reference.mean, data.train.x.mean(axis=0))


def test_same_seed_gives_identical_metrics(trained: dict[str, Path], tmp_path: Path) -> None:
    again = train_iot(
        SKAB, tmp_path, seed=0, max_rows_per_file=ROWS, console=quiet(), device_search=SEARCH
    )
    for name, version_dir in zip(NAMES, again, strict=True):
        first, second = load_manifest(trained[name]), load_manifest(version_dir)
        assert second.metrics == first.metrics
        assert second.threshold == first.threshold
    with pytest.raises(VersionExistsError, match="force"):
        train_iot(
            SKAB,
            tmp_path,
            version="1",
            max_rows_per_file=ROWS,
            console=quiet(),
            device_search=SEARCH,
        )


def test_next_version_is_shared(tmp_path: Path) -> None:
    (tmp_path / "iot-lof" / "2").mkdir(parents=True)
    dirs = train_iot(SKAB, tmp_path, max_rows_per_file=40, console=quiet(), device_search=SEARCH)
    assert [d.name for d in dirs] == ["3"] * 5


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*--data"):
        train_iot(tmp_path / "nowhere", tmp_path / "repo", console=quiet(), device_search=SEARCH)


def test_missing_folder(tmp_path: Path) -> None:
    shutil.copytree(SKAB / "anomaly-free", tmp_path / "skab" / "anomaly-free")
    with pytest.raises(ValueError, match=r"valve1 has no \.csv files"):
        train_iot(tmp_path / "skab", tmp_path / "repo", console=quiet(), device_search=SEARCH)


def test_wrong_columns(tmp_path: Path) -> None:
    skab = tmp_path / "skab"
    shutil.copytree(SKAB, skab)
    path = skab / "anomaly-free" / "anomaly-free.csv"
    text = path.read_text(encoding="utf-8").replace("Pressure", "Druck", 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"missing 1 required column.*'Pressure'"):
        train_iot(
            skab, tmp_path / "repo", max_rows_per_file=40, console=quiet(), device_search=SEARCH
        )
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_cli_missing_data_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        train_cli, ["iot", "--data", str(tmp_path / "missing"), "--repository", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_manifests_declare_device_baselines(trained: dict[str, Path], data: SkabData) -> None:
    from mlgate.training.iot import DEVICE_WINDOWS, baseline_readings_for

    for version_dir in trained.values():
        manifest = load_manifest(version_dir)
        device = manifest.device_baseline
        assert device is not None
        # Thinned runs (150 rows) are too short for 400 readings: two thirds of the shortest.
        assert device.required_readings == baseline_readings_for(data) == 100
        assert device.window in DEVICE_WINDOWS
        metrics = device.metrics
        assert metrics["split"] == "test" and "validation" in metrics
        for key in ("f1", "false_alarm_rate", "missed_alarm_rate", "precision", "recall"):
            assert key in metrics and key in metrics["validation"]
        # Chosen on validation only: the selected window has the best validation F1.
        best = max(v["validation_f1"] for v in metrics["window_selection"].values())
        assert metrics["window_selection"][str(device.window)]["validation_f1"] == best


def test_device_input_maps_a_run_onto_the_reference() -> None:
    from mlgate.training.iot import device_input

    rng = np.random.default_rng(0)
    x = 50.0 + 2.0 * rng.normal(size=(600, 5))
    mapped = device_input(x, np.zeros(5), np.ones(5), window=1, baseline_readings=400)
    assert mapped.shape == (200, 5)
    # Standardised by the first 400 readings: the rest has mean ~0 and std ~1.
    assert np.abs(mapped.mean(axis=0)).max() < 0.3
    assert np.abs(mapped.std(axis=0) - 1).max() < 0.2


def test_manifests_declare_the_per_device_detector_chosen_by_cv(
    trained: dict[str, Path],
) -> None:
    from mlgate.devices.detectors import DetectorParams

    for name, version_dir in trained.items():
        manifest = load_manifest(version_dir)
        detector = manifest.device_detector
        assert detector is not None
        assert set(detector.features) <= set(manifest.feature_names)
        params = DetectorParams.from_dict(detector.params)
        assert params.method in SEARCH.methods and params.smoothing == 5
        assert detector.calibration_readings == 100
        metrics = detector.metrics
        families = metrics["families"]
        # Sensor sets: all, and without the drifting temperature(s) (three with 8 sensors).
        sets = 3 if name == DEVICE_DISTANCE else 2
        assert len(families) == sets * len(SEARCH.methods)
        # The shipped family has the best nested-CV F1 of all families tried.
        best = max(f["f1"]["mean"] for f in families.values())
        assert families[metrics["family"]]["f1"]["mean"] == best == metrics["cv"]["f1"]["mean"]
        assert len(metrics["folds"]) == SEARCH.folds
        for key in ("f1", "far", "mar"):
            assert set(metrics["cv"][key]) == {"mean", "std", "min", "max"}
        assert 0 <= metrics["anomaly_free_run"]["far_once"] <= 1
