"""JSON views of registry objects, shared by the v1 and the seed-compatible routes."""

from __future__ import annotations

from typing import Any

from mlgate.registry.paths import hide_paths
from mlgate.registry.registry import ModelEntry, ModelVersion, version_sort_key


def version_view(mv: ModelVersion, *, full: bool = True) -> dict[str, Any]:
    m = mv.manifest
    view: dict[str, Any] = {
        "version": m.version,
        "runtime": m.runtime,
        "task": m.task,
        "created_at": m.created_at.isoformat() if m.created_at else None,
        "loaded_at": mv.loaded_at.isoformat(),
        "single_row_latency_us": round(
            getattr(mv.runtime, "current_single_row_us", None) or mv.single_row_us, 1
        ),
        "execution": getattr(mv.runtime, "execution", m.runtime),
    }
    if full:
        view.update(
            {
                "description": m.description,
                "features": [f.model_dump(exclude_defaults=True) for f in m.features],
                "n_features": len(m.features),
                "classes": m.classes,
                "attack_classes": m.attack_classes,
                "threshold": m.threshold,
                "metrics": m.metrics,
                "provenance": m.provenance,
            }
        )
    return view


def model_view(entry: ModelEntry, *, full: bool = False) -> dict[str, Any]:
    """A model with its versions; ``full`` adds schema and metrics of each version."""
    default = entry.default_version()
    current = entry.versions.get(default) if default else None
    versions = sorted(entry.versions, key=version_sort_key)
    view: dict[str, Any] = {
        "name": entry.name,
        "description": entry.description,
        "task": current.manifest.task if current else None,
        "default_version": default,
        # Whether a request without a version is served (KServe's v1 readiness field).
        "ready": current is not None,
        "aliases": entry.aliases,
        "versions": versions,
        "n_features": current.n_features if current else None,
        # Named relative to the repository already; no server path, whatever raised.
        "load_errors": {key: hide_paths(error) for key, error in entry.errors.items()},
    }
    if full:
        view["versions"] = [version_view(entry.versions[v]) for v in versions]
        if current is not None:
            view["schema"] = {
                "features": [
                    f.model_dump(exclude_defaults=True) for f in current.manifest.features
                ],
                "classes": current.manifest.classes,
                "attack_classes": current.manifest.attack_classes,
                "threshold": current.manifest.threshold,
            }
            view["metrics"] = current.manifest.metrics
    return view
