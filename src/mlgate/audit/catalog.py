"""What the audit log needs to know about model versions, kept after they stop serving.

Rows can wait in the queue (a database outage) across a reload that removes their
version, and quality reports cover versions that are gone: so the facts are recorded
as versions load (a registry listener) and never forgotten (a few per version).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlgate.registry.registry import ModelVersion


@dataclass(frozen=True, slots=True)
class VersionFacts:
    task: str
    classes: tuple[str, ...]
    calibration: dict[str, object] | None
    """The manifest's ``metrics.calibration`` (how the probabilities were calibrated), if
    any: without it confidence is not an estimate of accuracy."""


class VersionCatalog:
    """Facts of every model version loaded since start; a registry listener."""

    def __init__(self) -> None:
        self._facts: dict[tuple[str, str], VersionFacts] = {}

    def on_load(self, mv: ModelVersion) -> None:
        manifest = mv.manifest
        calibration = manifest.metrics.get("calibration")
        self._facts[(mv.name, mv.version)] = VersionFacts(
            task=manifest.task,
            classes=tuple(manifest.classes),
            calibration=dict(calibration) if isinstance(calibration, dict) else None,
        )

    def on_unload(self, mv: ModelVersion) -> None:
        """Kept: queued rows and quality reports may still need it."""

    def facts(self, model: str, version: str) -> VersionFacts | None:
        return self._facts.get((model, version))

    def task_of(self, model: str) -> str | None:
        """The task of any known version of ``model``."""
        for (name, _), facts in self._facts.items():
            if name == model:
                return facts.task
        return None

    def class_names(self, model: str, version: str) -> tuple[str, ...] | None:
        facts = self._facts.get((model, version))
        return facts.classes if facts is not None and facts.task == "classification" else None
