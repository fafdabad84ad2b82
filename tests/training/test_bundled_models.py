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
from mlgate.training.iot import (
    ALL_COLUMNS,
    DETECTORS,
    DEVICE_DISTANCE,
    SCORE_RTOL,
    SELECTED,
    SkabData,
    load_skab,
)

BUNDLED = Path(mlgate.__file__).parent / "bundled_models"
ROOT = Path(__file__).resolve().parents[2]
MODELS = ["ids", *DETECTORS, SELECTED]


def _version_dir(name: str, version: str = "1") -> Path:
    return BUNDLED / name / version


def _data_path(record: dict[str, object]) -> Path:
    path = ROOT / str(record["path"])
    if not path.is_file():
        pytest.skip(f"training data {record['path']} is not in this checkout")
    assert sha256_file(path) == record["sha256"], f"{path} differs from the training data"
    return path


def test_repository_holds_exactly_the_flagship_models() -> None:
    names = sorted(p.name for p in BUNDLED.iterdir() if p.is_dir() and p.name[0] != ".")
    assert names == sorted([*MODELS, DEVICE_DISTANCE])
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total < 15 * 1024 * 1024


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_loads(name: str) -> None:
    model_file = load_model_file(BUNDLED / name)
    versions = [p for p in (BUNDLED / name).iterdir() if (p / MANIFEST_FILE).exists()]
    assert model_file.aliases["stable"] in {p.name for p in versions}
    assert model_file.description
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
    assert sorted(report.loaded) == sorted([*MODELS, DEVICE_DISTANCE])
    for entry in registry.models():
        version = entry.versions[min(entry.versions)]
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


IOT_MODELS = [*DETECTORS, SELECTED]


@pytest.mark.parametrize("name", IOT_MODELS)
def test_iot_version_2_is_version_1_plus_device_baselines(name: str) -> None:
    v1 = load_manifest(_version_dir(name, "1"))
    v2 = load_manifest(_version_dir(name, "2"))
    # Without a device the answers are exactly version 1's: same graph, same threshold.
    assert v2.artifact_sha256 == v1.artifact_sha256
    assert (v2.threshold, v2.score_scale, v2.reference) == (
        v1.threshold,
        v1.score_scale,
        v1.reference,
    )
    assert v1.device_baseline is None
    assert v2.device_baseline is not None
    assert v2.device_baseline.required_readings == 400
    assert v2.provenance["split"]["max_rows_per_file"] is None


@pytest.fixture(scope="module")
def skab_all_sensors(skab: SkabData) -> SkabData:
    del skab  # checks the data files against the manifests first
    return load_skab(ROOT / "data" / "skab", columns=ALL_COLUMNS)


def test_device_distance_is_for_devices(skab_all_sensors: SkabData) -> None:
    version_dir = _version_dir(DEVICE_DISTANCE, "2")
    manifest = load_manifest(version_dir)
    assert manifest.artifact_sha256 == sha256_file(version_dir / manifest.artifact)
    assert len(manifest.features) == 8 and manifest.reference is not None
    assert manifest.device_baseline is not None
    assert manifest.device_baseline.required_readings == 400
    assert manifest.provenance["split"]["max_rows_per_file"] is None
    _check_device_metrics(DEVICE_DISTANCE, skab_all_sensors)


@pytest.mark.parametrize("name", DETECTORS)
def test_iot_reproduces_its_recorded_device_metrics(name: str, skab: SkabData) -> None:
    _check_device_metrics(name, skab)


def _check_device_metrics(name: str, skab: SkabData) -> None:
    """Stream the test runs as devices, as training did: the same counts."""
    from mlgate.training.iot import device_input

    version_dir = _version_dir(name, "2")
    manifest = load_manifest(version_dir)
    device = manifest.device_baseline
    assert device is not None and manifest.reference is not None
    runtime = load_runtime(version_dir, manifest)
    mean, std = np.asarray(manifest.reference.mean), np.asarray(manifest.reference.std)
    scores, labels = [], []
    for run in skab.test:
        assert run.y is not None
        x = device_input(
            run.x, mean, std, window=device.window, baseline_readings=device.required_readings
        )
        scores.append(runtime.run(x))
        labels.append(run.y[device.required_readings :])
    again = binary_metrics(np.concatenate(labels), np.concatenate(scores) >= device.threshold)
    for key in ("tp", "fp", "tn", "fn"):
        assert again[key] == device.metrics[key], key


@pytest.mark.parametrize("name", [*IOT_MODELS, DEVICE_DISTANCE])
def test_iot_version_3_is_version_2_plus_a_device_detector(name: str) -> None:
    v2 = load_manifest(_version_dir(name, "2"))
    v3 = load_manifest(_version_dir(name, "3"))
    # Without a device, serving is version 2's: same graph, thresholds and device
    # baselines; with one, the device's own detector. `stable` is version 3.
    assert load_model_file(BUNDLED / name).aliases == {"stable": "3"}
    assert v3.artifact_sha256 == v2.artifact_sha256
    assert (v3.threshold, v3.reference, v3.device_baseline) == (
        v2.threshold,
        v2.reference,
        v2.device_baseline,
    )
    assert v2.device_detector is None
    detector = v3.device_detector
    assert detector is not None
    assert detector.calibration_readings == 400
    assert "temperature" not in detector.features  # the pump body's temperature drifts
    cv = detector.metrics["cv"]
    assert cv["f1"]["mean"] == max(f["f1"]["mean"] for f in detector.metrics["families"].values())


@pytest.mark.parametrize("name", [SELECTED, DEVICE_DISTANCE])
def test_device_detector_reproduces_its_recorded_figures(
    name: str, skab_all_sensors: SkabData
) -> None:
    """Every labelled run streamed as a device with the recorded recipe: the pooled
    figures the manifest records for the recipe on all runs."""
    from mlgate.devices.detectors import DetectorParams, fit, initial_state, score

    detector = load_manifest(_version_dir(name, "3")).device_detector
    assert detector is not None
    columns = [ALL_COLUMNS.index(_skab_column(f)) for f in detector.features]
    params = DetectorParams.from_dict(detector.params)
    readings = detector.calibration_readings
    labels, alarms = [], []
    for run in [*skab_all_sensors.validation, *skab_all_sensors.test]:
        assert run.y is not None
        x = run.x[:, columns]
        model = fit(x[:readings], params)
        alarms.append(score(model, x[readings:], initial_state(model, x[:readings])).alarms)
        labels.append(run.y[readings:])
    again = binary_metrics(np.concatenate(labels), np.concatenate(alarms))
    recorded = detector.metrics["selected_on_all_runs"]
    assert again["f1"] == pytest.approx(recorded["f1"], abs=1e-4)
    assert again["false_alarm_rate"] == pytest.approx(recorded["far"], abs=1e-4)


def _skab_column(feature: str) -> str:
    from mlgate.training.iot import ALL_FEATURES

    return next(column for name, column, _, _ in ALL_FEATURES if name == feature)


@pytest.mark.parametrize("version", ["3", "4"])
def test_ids_trained_on_every_flow_reproduces_its_figures(version: str) -> None:
    """Versions 3 (trees) and 4 (DQN): trained on all 5,050 flows, measured by 5-fold CV;
    the served graph reproduces the recorded figures on the training flows and the
    explainer file is the one the manifest names."""
    version_dir = _version_dir("ids", version)
    manifest = load_manifest(version_dir)
    assert manifest.metrics["split"] == "cross-validation"
    cv = manifest.metrics["cv"]
    assert cv["folds"] == 5 and cv["rows"] == 5050
    assert manifest.provenance["rows_used"] == 5050
    assert manifest.explainer is not None
    assert manifest.explainer.sha256 == sha256_file(version_dir / manifest.explainer.file)
    paths = [_data_path(record) for record in manifest.provenance["data"]]
    dataset = load_ids_dataset(paths)
    proba = load_runtime(version_dir, manifest).run(clean_features(dataset.x))
    predicted = np.asarray(manifest.classes, dtype=object)[proba.argmax(axis=1)]
    again = classification_metrics(dataset.y, predicted, manifest.classes)
    assert again["macro_f1"] == pytest.approx(manifest.metrics["training_rows"]["macro_f1"])


def test_ids_stable_is_the_better_by_cross_validation() -> None:
    """By the nested figure (the count chosen inside each fold), which both record."""
    f1 = {
        v: load_manifest(_version_dir("ids", v)).metrics["cv"]["nested"]["macro_f1"]["mean"]
        for v in ("3", "4")
    }
    stable = load_model_file(BUNDLED / "ids").aliases["stable"]
    assert f1[stable] == max(f1.values())
    comparison = load_manifest(_version_dir("ids", "4")).metrics["comparison"]
    assert comparison["baseline"]["version"] == "3"
    assert comparison["dqn_macro_f1"] == f1["4"]
    assert comparison["baseline_macro_f1"] == f1["3"]


def _readme_rows(heading: str, first_cell: str) -> dict[str, list[str]]:
    """Rows of the first README table after ``heading`` whose header starts with
    ``first_cell``: first cell (without markup) -> cells."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").split(heading, 1)[1]
    lines = [line.strip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell}"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("*", "") for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def _mean_std(cell: str) -> tuple[float, float]:
    mean, std = cell.split("±")
    return float(mean), float(std.split()[0])


def test_the_readme_ids_table_is_the_manifests() -> None:
    """The README's CV table of ids versions 3 and 4 shows the recorded figures."""
    rows = _readme_rows("### Bundled models and training", "`ids` (5-fold CV")
    for version, prefix in (("3", "v3 "), ("4", "v4 ")):
        (cells,) = [c for name, c in rows.items() if name.startswith(prefix)]
        cv = load_manifest(_version_dir("ids", version)).metrics["cv"]
        mean, std = _mean_std(cells[1])
        assert mean == round(cv["macro_f1"]["mean"], 4), version
        assert std == round(cv["macro_f1"]["std"], 4), version
        nested = cv["nested"]["macro_f1"]
        assert _mean_std(cells[2]) == (round(nested["mean"], 4), round(nested["std"], 4))
        benign_mean, benign_std = _mean_std(cells[5])
        assert benign_mean == round(cv["per_class"]["BENIGN"]["f1"]["mean"], 3), version
        assert benign_std == round(cv["per_class"]["BENIGN"]["f1"]["std"], 3), version


def test_the_readme_detector_table_is_the_manifests() -> None:
    """The README's per-device detector table shows each manifest's CV figures."""
    rows = _readme_rows("### Per-device detectors (version 3)", "model |")
    for name in ("iot", DEVICE_DISTANCE):
        spec = load_manifest(_version_dir(name, "3")).device_detector
        assert spec is not None
        cells = rows[name]
        for column, key in ((4, "f1"), (5, "far"), (6, "mar")):
            mean, std = _mean_std(cells[column])
            assert mean == round(spec.metrics["cv"][key]["mean"], 3), (name, key)
            assert std == round(spec.metrics["cv"][key]["std"], 3), (name, key)
