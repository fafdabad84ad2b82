"""Manifests: what a version declares is checked before anything is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.registry.manifest import ManifestError, load_manifest, load_model_file

BASE: dict[str, Any] = {
    "name": "m",
    "version": "1",
    "runtime": "sklearn",
    "task": "classification",
    "artifact": "model.joblib",
    "features": [{"name": "a", "aliases": ["A"]}, {"name": "b"}],
    "classes": ["ok", "bad"],
    "attack_classes": ["bad"],
}


def _detector(params: dict[str, Any]) -> dict[str, Any]:
    """An anomaly model whose per-device detector recipe has ``params``."""
    recipe = {"features": ["a"], "calibration_readings": 400, "params": params}
    return {"task": "anomaly", "classes": [], "threshold": 1.0, "device_detector": recipe}


def write(tmp_path: Path, data: Any, name: str = "m", version: str = "1") -> Path:
    version_dir = tmp_path / name / version
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "manifest.yaml").write_text(yaml.safe_dump(data))
    return version_dir


def test_valid_manifest(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, BASE))
    assert manifest.feature_names == ["a", "b"]
    assert yaml.safe_load(manifest.to_yaml())["classes"] == ["ok", "bad"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "regression"}, "task"),
        ({"classes": ["only"]}, "at least two classes"),
        ({"attack_classes": ["ghost"]}, "attack_classes not among classes"),
        ({"features": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"features": [{"name": "a", "aliases": ["b"]}, {"name": "b"}]}, "aliases"),
        ({"features": []}, "features"),
        ({"task": "anomaly", "classes": []}, "threshold"),
        ({"surprise": 1}, "surprise"),
        ({"name": "Bad Name"}, "name"),
        ({"reference": {"mean": [0.0], "std": [1.0]}}, "one value per feature"),
        (_detector({"method": "magic"}), "unknown method 'magic'"),
        (_detector({"debounce_k": 4, "debounce_n": 2}), "debounce_k"),
        (_detector({"speed": 1}), "device_detector params"),
    ],
)
def test_invalid_manifests_say_why(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, BASE | change))


def test_manifest_must_live_in_its_own_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="lives in"):
        load_manifest(write(tmp_path, BASE, version="2"))


def test_unreadable_manifests(tmp_path: Path) -> None:
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(version_dir)
    (version_dir / "manifest.yaml").write_text("name: [unclosed")
    with pytest.raises(ManifestError, match="cannot be read"):
        load_manifest(version_dir)
    (version_dir / "manifest.yaml").write_text("- a list")
    with pytest.raises(ManifestError, match="not a mapping"):
        load_manifest(version_dir)


def test_model_file_aliases(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"aliases": {"stable": "1"}}))
    assert load_model_file(tmp_path).aliases == {"stable": "1"}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"aliases": {"latest": "1"}}))
    with pytest.raises(ManifestError, match="computed"):
        load_model_file(tmp_path)
    assert load_model_file(tmp_path / "nothing").aliases == {}
