"""Registry lifecycle: listeners hear which versions start and stop serving."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlgate.errors import ModelNotFound
from mlgate.registry.registry import ModelRegistry, ModelVersion


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, int]] = []

    def on_load(self, mv: ModelVersion) -> None:
        self.events.append(("load", mv.name, mv.version, id(mv)))

    def on_unload(self, mv: ModelVersion) -> None:
        self.events.append(("unload", mv.name, mv.version, id(mv)))

    def take(self) -> list[tuple[str, str, str]]:
        events = [(kind, name, version) for kind, name, version, _ in self.events]
        self.events.clear()
        return sorted(events)


class Exploding:
    def on_load(self, mv: ModelVersion) -> None:
        raise RuntimeError("listener bug")

    def on_unload(self, mv: ModelVersion) -> None:
        raise RuntimeError("listener bug")


def served(registry: ModelRegistry) -> list[tuple[str, str]]:
    return sorted((e.name, v) for e in registry.models() for v in e.versions)


def test_a_new_listener_hears_what_already_serves(model_repo: Path) -> None:
    registry = ModelRegistry(model_repo, default_model="ids")
    registry.reload()
    journal = Journal()
    registry.add_listener(journal)
    assert journal.take() == sorted(("load", n, v) for n, v in served(registry))


def test_changed_and_removed_versions_are_unloaded_after_the_new_ones_load(
    model_repo: Path,
) -> None:
    registry = ModelRegistry(model_repo, default_model="ids")
    journal = Journal()
    registry.add_listener(journal)
    registry.reload()
    journal.take()
    old = registry.resolve("ids", "2")
    manifest = model_repo / "ids" / "2" / "manifest.yaml"
    os.utime(manifest, ns=(manifest.stat().st_atime_ns, manifest.stat().st_mtime_ns + 10**9))
    shutil.rmtree(model_repo / "iot-lof")
    registry.reload()
    events = journal.events
    kinds = [(kind, name, version) for kind, name, version, _ in events]
    assert ("load", "ids", "2") in kinds and ("unload", "ids", "2") in kinds
    # The new version was announced before the old one left, and they are different objects.
    load_at = kinds.index(("load", "ids", "2"))
    unload_at = kinds.index(("unload", "ids", "2"))
    assert load_at < unload_at
    assert events[unload_at][3] == id(old) != events[load_at][3]
    assert ("unload", "iot-lof", "1") in kinds and ("unload", "iot-lof", "2") in kinds
    # Unchanged versions are neither loaded nor unloaded again.
    assert not any(name == "ids" and version == "1" for _, name, version in kinds)


def test_unload_and_load_of_a_model(model_repo: Path) -> None:
    registry = ModelRegistry(model_repo, default_model="ids")
    registry.reload()
    journal = Journal()
    registry.add_listener(journal)
    journal.take()
    registry.unload("iot")
    assert journal.take() == [("unload", "iot", v) for v in ("1", "2", "3")]
    with pytest.raises(ModelNotFound):
        registry.resolve("iot")
    registry.reload()
    assert "iot" not in {e.name for e in registry.models()}
    assert registry.unloaded == {"iot"}
    registry.load("iot")
    assert journal.take() == [("load", "iot", v) for v in ("1", "2", "3")]
    assert registry.resolve("iot").name == "iot"
    with pytest.raises(ModelNotFound):
        registry.unload("nope")
    with pytest.raises(ModelNotFound):
        registry.load("nope")


def test_a_failing_listener_does_not_break_a_reload(model_repo: Path) -> None:
    registry = ModelRegistry(model_repo, default_model="ids")
    registry.add_listener(Exploding())
    journal = Journal()
    registry.add_listener(journal)
    registry.reload()
    assert len(journal.take()) == len(served(registry)) > 0
