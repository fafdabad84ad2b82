"""Parsed manifests kept as JSON: a restart reads them without parsing the YAML, an
edited file is parsed again, and what JSON cannot hold exactly is never kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mlgate.registry import manifest as manifest_module
from mlgate.registry.manifest import ManifestError, load_manifest, load_model_file
from mlgate.registry.registry import ModelRegistry
from mlgate.registry.runtimes import LoadOptions
from mlgate.registry.yaml_cache import YamlCache
from mlgate.settings import bundled_repository
from tests.conftest import make_settings

IDS_3 = bundled_repository() / "ids" / "3"


def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the YAML parses from now on."""
    calls: list[int] = []
    real = yaml.load

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(manifest_module.yaml, "load", counted)
    return calls


def test_a_kept_manifest_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = YamlCache(tmp_path / "cache")
    first = load_manifest(IDS_3, cache)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    counted = parses(monkeypatch)
    again = load_manifest(IDS_3, cache)
    assert counted == []
    assert again == first == load_manifest(IDS_3)


def test_an_edited_manifest_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = tmp_path / "repo" / "ids" / "3"
    shutil.copytree(IDS_3, version)
    cache = YamlCache(tmp_path / "cache")
    load_manifest(version, cache)
    path = version / "manifest.yaml"
    path.write_text(path.read_text().replace("description: '", "description: 'edited - ", 1))
    counted = parses(monkeypatch)
    edited = load_manifest(version, cache)
    assert counted == [1]
    assert edited.description is not None and edited.description.startswith("edited -")


def test_what_json_cannot_hold_exactly_is_not_kept(tmp_path: Path) -> None:
    cache = YamlCache(tmp_path)
    some = cache.key(b"some yaml")
    for document in ({"when": yaml.safe_load("2026-12-03")}, {"x": float("nan")}, {1: "a"}):
        cache.put(some, document)
        assert cache.get(some) == (False, None)
    plain = cache.key(b"plain")
    cache.put(plain, {"a": [1, 2.5, None, True, "s"]})
    assert cache.get(plain) == (True, {"a": [1, 2.5, None, True, "s"]})


def test_a_damaged_entry_is_parsed_again_and_replaced(tmp_path: Path) -> None:
    cache = YamlCache(tmp_path)
    load_manifest(IDS_3, cache)
    (entry,) = tmp_path.glob("*.json")
    entry.write_bytes(b"{not json")
    assert load_manifest(IDS_3, cache) == load_manifest(IDS_3)
    assert cache.get(cache.key((IDS_3 / "manifest.yaml").read_bytes()))[0]


def test_an_unwritable_directory_only_costs_the_parse(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = YamlCache(blocker / "cache")
    assert load_manifest(IDS_3, cache) == load_manifest(IDS_3)


def test_errors_are_the_same_with_a_cache(tmp_path: Path) -> None:
    model = tmp_path / "broken"
    model.mkdir()
    (model / "model.yaml").write_bytes(b"stable: [unclosed")
    for cache in (None, YamlCache(tmp_path / "cache")):
        with pytest.raises(ManifestError, match=r"broken/model.yaml cannot be read"):
            load_model_file(model, cache)
    (model / "model.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_model_file(model)


def test_a_registry_start_reads_the_kept_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = LoadOptions(yaml_cache=YamlCache(tmp_path))
    first = ModelRegistry(bundled_repository(), default_model="ids", load_options=options)
    first.reload()
    counted = parses(monkeypatch)
    second = ModelRegistry(bundled_repository(), default_model="ids", load_options=options)
    second.reload()
    assert counted == []

    def manifests(registry: ModelRegistry) -> list[object]:
        return [mv.manifest for entry in registry.models() for mv in entry.versions.values()]

    assert manifests(second) == manifests(first)
    assert len(manifests(second)) >= 10


def test_the_settings_turn_it_on_in_a_directory_of_their_own(tmp_path: Path) -> None:
    options = make_settings(
        models={"manifest_cache": True, "manifest_cache_dir": tmp_path}
    ).models.load_options()
    assert options.yaml_cache is not None and options.yaml_cache.directory == tmp_path
    assert make_settings().models.load_options().yaml_cache is None
