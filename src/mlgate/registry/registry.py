"""The model registry: every loaded version of every model, its aliases, and reloads.

The registry holds an immutable snapshot (``dict[name, ModelEntry]``) that a reload
replaces in one assignment, so a request that resolved a version keeps using it while a
reload runs, and no request ever sees a half-built registry. A version that fails to
load leaves whatever served before in place and is reported.

Listeners (:class:`RegistryListener`) hear of every version that starts serving
(``on_load``, before requests can resolve it) and of every version that stops
(``on_unload``, after the swap: requests in flight may still be using it, so a listener
drains rather than cancels). Per-version resources - batchers, cache namespaces,
metrics - follow these events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlgate.errors import ModelNotFound, ServiceUnavailable, VersionNotFound
from mlgate.registry.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    BatchingSpec,
    Manifest,
    ManifestError,
    ModelFile,
    load_manifest,
    load_model_file,
)
from mlgate.registry.paths import refuse_links, verified_artifact
from mlgate.registry.runtimes import LoadOptions, Runtime, load_runtime

log = logging.getLogger("mlgate.registry")

LATEST = "latest"
STABLE = "stable"


def version_sort_key(version: str) -> tuple[int, int, str]:
    """Numeric versions in numeric order, after that the others alphabetically."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One loaded, warmed-up version of a model."""

    manifest: Manifest
    runtime: Runtime
    path: Path
    fingerprint: tuple[Any, ...]
    loaded_at: datetime
    single_row_us: float
    inline: bool
    feature_index: dict[str, int]
    reference_mean: np.ndarray | None
    reference_std: np.ndarray | None
    attack_mask: np.ndarray | None
    batching: BatchingSpec | None = None
    """The version's batching (manifest, else model.yaml); None: the server's default."""
    load_seconds: float = 0.0
    """How long loading and warming it up took."""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_features(self) -> int:
        return len(self.manifest.features)


@dataclass(frozen=True)
class ModelEntry:
    """All versions of one model that loaded, its aliases and its load errors."""

    name: str
    description: str
    versions: dict[str, ModelVersion]
    aliases: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    options: ModelFile = field(default_factory=ModelFile)
    """The model's model.yaml (cache, detections, ...; the last readable one)."""

    def default_version(self) -> str | None:
        return self.aliases.get(STABLE) or self.aliases.get(LATEST)


@dataclass
class ReloadReport:
    """What a reload did: per model, versions loaded, kept, failed."""

    loaded: dict[str, list[str]] = field(default_factory=dict)
    unchanged: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": self.failed,
            "duration_ms": round(self.duration_ms, 2),
        }


def _fingerprint(version_dir: Path) -> tuple[Any, ...]:
    """Cheap change detection: size and mtime of the manifest and every other file."""
    parts = []
    for path in sorted(version_dir.iterdir()):
        if path.is_file():
            stat = path.stat()
            parts.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(parts)


def _feature_index(manifest: Manifest) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, feature in enumerate(manifest.features):
        index[feature.name] = i
        for alias in feature.aliases:
            index[alias] = i
    return index


class RegistryListener(Protocol):
    """Hears which model versions start and stop serving.

    Called from the thread that reloads (a worker thread in the server): a listener
    that touches event-loop objects hands the work to its loop (``call_soon_threadsafe``).
    """

    def on_load(self, mv: ModelVersion) -> None: ...

    def on_unload(self, mv: ModelVersion) -> None: ...


class LoadFailureListener(Protocol):
    """Hears of each model version that fails to load (an optional listener method)."""

    def on_load_failure(self, model: str, version: str) -> None: ...


class ModelRegistry:
    """Loads a model repository and resolves ``(name, version or alias)`` to a version."""

    def __init__(
        self,
        repository: Path,
        *,
        default_model: str,
        inline_threshold_us: float = 150.0,
        follow_symlinks: bool = False,
        load_options: LoadOptions | None = None,
    ) -> None:
        self.repository = repository
        self.load_options = load_options or LoadOptions()
        self.default_model = default_model
        self.inline_threshold_us = inline_threshold_us
        self.follow_symlinks = follow_symlinks
        self._snapshot: dict[str, ModelEntry] = {}
        self._lock = threading.RLock()
        self._listeners: list[RegistryListener] = []
        self._unloaded: set[str] = set()
        self.loaded_once = False
        self.last_report: ReloadReport | None = None
        self.repository_fingerprint: tuple[Any, ...] = ()
        # Aliases moved through the admin API (stored in the database, applied by every
        # worker): model -> alias -> version; they win over model.yaml.
        self._alias_overrides: dict[str, dict[str, str]] = {}

    # -- listeners -------------------------------------------------------------------

    def add_listener(self, listener: RegistryListener) -> None:
        """Hear of every version that starts or stops serving from now on (and of those
        already serving, as loads)."""
        with self._lock:
            self._listeners.append(listener)
            for entry in self._snapshot.values():
                for mv in entry.versions.values():
                    self._notify("on_load", mv, [listener])

    def remove_listener(self, listener: RegistryListener) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def _notify(
        self, event: str, mv: ModelVersion, listeners: list[RegistryListener] | None = None
    ) -> None:
        for listener in listeners if listeners is not None else self._listeners:
            try:
                getattr(listener, event)(mv)
            except Exception:
                log.exception(
                    "registry listener failed",
                    extra={"event": event, "model": mv.name, "version": mv.version},
                )

    def _swap(self, new: dict[str, ModelEntry]) -> None:
        """Replace the snapshot, telling listeners what starts and stops serving."""
        old_versions = {id(mv): mv for e in self._snapshot.values() for mv in e.versions.values()}
        new_versions = {id(mv): mv for e in new.values() for mv in e.versions.values()}
        for key, mv in new_versions.items():
            if key not in old_versions:
                self._notify("on_load", mv)
        self._snapshot = new
        for key, mv in old_versions.items():
            if key not in new_versions:
                self._notify("on_unload", mv)

    # -- queries ---------------------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        return [self._snapshot[name] for name in sorted(self._snapshot)]

    def entry(self, name: str) -> ModelEntry:
        if not self.loaded_once:
            raise ServiceUnavailable("models are still loading", headers={"Retry-After": "1"})
        try:
            return self._snapshot[name]
        except KeyError:
            raise ModelNotFound(
                f"model {name!r} is not served",
                details={"model": name, "available": sorted(self._snapshot)},
            ) from None

    def options(self, name: str) -> ModelFile | None:
        """A served model's model.yaml settings (None when the model is not served)."""
        entry = self._snapshot.get(name)
        return entry.options if entry is not None else None

    def resolve(self, name: str, version_or_alias: str | None = None) -> ModelVersion:
        """The version a request means: an explicit version, an alias, or the default."""
        entry = self.entry(name)
        ref = version_or_alias or entry.default_version()
        version = entry.aliases.get(ref, ref) if ref is not None else None
        if version is None or version not in entry.versions:
            details: dict[str, Any] = {
                "model": name,
                "version": version_or_alias,
                "available_versions": sorted(entry.versions, key=version_sort_key),
                "aliases": entry.aliases,
            }
            if version in entry.errors:
                details["load_error"] = entry.errors[version]
            raise VersionNotFound(
                f"model {name!r} has no loaded version or alias {version_or_alias!r}"
                if version_or_alias
                else f"model {name!r} has no loaded version",
                details=details,
            )
        return entry.versions[version]

    # -- loading ---------------------------------------------------------------------

    def scan_fingerprint(self) -> tuple[Any, ...]:
        """What the repository looks like on disk now (to detect changes cheaply)."""
        if not self.repository.is_dir():
            return ()
        parts: list[Any] = []
        for model_dir in sorted(p for p in self.repository.iterdir() if p.is_dir()):
            model_file = model_dir / MODEL_FILE
            if model_file.exists():
                parts.append((model_dir.name, model_file.stat().st_mtime_ns))
            for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
                parts.append((model_dir.name, version_dir.name, _fingerprint(version_dir)))
        return tuple(parts)

    def reload(self) -> ReloadReport:
        """Rescan the repository; blocking (run it in a thread from async code)."""
        with self._lock:
            started = time.perf_counter()
            report = ReloadReport()
            if not self.repository.is_dir():
                raise ManifestError(f"model repository {self.repository} does not exist")
            fingerprint = self.scan_fingerprint()
            old = self._snapshot
            new: dict[str, ModelEntry] = {}
            model_dirs = sorted(p for p in self.repository.iterdir() if p.is_dir())
            for model_dir in model_dirs:
                if model_dir.name in self._unloaded:
                    continue
                if not any((v / MANIFEST_FILE).exists() for v in model_dir.iterdir()):
                    continue
                entry = self._load_model(model_dir, old.get(model_dir.name), report)
                if entry is not None:
                    new[model_dir.name] = entry
            for name, entry in old.items():
                gone = [v for v in entry.versions if name not in new or v not in new[name].versions]
                if gone:
                    report.removed[name] = gone
            self._swap(new)
            self.repository_fingerprint = fingerprint
            self.loaded_once = True
            report.duration_ms = (time.perf_counter() - started) * 1000
            self.last_report = report
            log.info("model repository loaded", extra={"reload": report.as_dict()})
            return report

    @property
    def unloaded(self) -> frozenset[str]:
        """Models an operator unloaded (not served until loaded again)."""
        return frozenset(self._unloaded)

    def unload(self, name: str) -> None:
        """Stop serving a model (until :meth:`load`); requests in flight finish."""
        with self._lock:
            if name not in self._snapshot:
                raise ModelNotFound(f"model {name!r} is not served", details={"model": name})
            self._unloaded.add(name)
            self._swap({k: v for k, v in self._snapshot.items() if k != name})

    def load(self, name: str) -> ReloadReport:
        """Serve a model again (after :meth:`unload`) and reload it from disk; 404 when
        the repository has no loadable version of it."""
        with self._lock:
            self._unloaded.discard(name)
            report = self.reload()
            entry = self._snapshot.get(name)
            if entry is None or not entry.versions:
                failed = report.failed.get(name)
                raise ModelNotFound(
                    f"model {name!r} has no loadable version in the repository"
                    + (f": {failed}" if failed else ""),
                    details={"model": name, "failed": failed},
                )
            return report

    # -- aliases moved through the admin API ---------------------------------------------

    def set_alias_overrides(self, overrides: Mapping[str, Mapping[str, str]]) -> bool:
        """Aliases that win over model.yaml (``latest`` stays computed); applied to the
        served snapshot at once and to every later reload. True when anything changed."""
        wanted = {m: dict(a) for m, a in overrides.items() if a}
        with self._lock:
            if wanted == self._alias_overrides:
                return False
            self._alias_overrides = wanted
            new: dict[str, ModelEntry] = {}
            for name, entry in self._snapshot.items():
                errors = {k: v for k, v in entry.errors.items() if not k.startswith("alias:")}
                aliases = self._aliases(name, entry.versions, entry.options, entry, errors)
                new[name] = replace(entry, aliases=aliases, errors=errors)
            self._swap(new)
            return True

    def _load_model(
        self, model_dir: Path, previous: ModelEntry | None, report: ReloadReport
    ) -> ModelEntry | None:
        name = model_dir.name
        errors: dict[str, str] = {}
        versions: dict[str, ModelVersion] = {}
        try:
            if not self.follow_symlinks:
                refuse_links(self.repository, model_dir / MODEL_FILE)
            model_file = load_model_file(model_dir, self.load_options.yaml_cache)
        except ManifestError as exc:
            errors[MODEL_FILE] = str(exc)
            model_file = None
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            if not (version_dir / MANIFEST_FILE).exists():
                continue
            version = version_dir.name
            old = previous.versions.get(version) if previous else None
            # model.yaml's batching shapes the version too: a change reloads it.
            batching = model_file.batching if model_file else None
            fingerprint = (*_fingerprint(version_dir), ("batching", repr(batching)))
            if old is not None and old.fingerprint == fingerprint:
                versions[version] = old
                report.unchanged.setdefault(name, []).append(version)
                continue
            try:
                versions[version] = self._load_version(version_dir, fingerprint, batching)
                report.loaded.setdefault(name, []).append(version)
            except Exception as exc:
                message = str(exc) or type(exc).__name__
                errors[version] = message
                report.failed.setdefault(name, {})[version] = message
                log.error(
                    "model version failed to load",
                    extra={"model": name, "version": version, "reason": message},
                )
                for listener in self._listeners:
                    on_failure = getattr(listener, "on_load_failure", None)
                    if on_failure is not None:
                        on_failure(name, version)
                if old is not None:
                    # Keep serving what worked before rather than dropping the version.
                    versions[version] = old
        if not versions and not errors:
            return None
        aliases = self._aliases(name, versions, model_file, previous, errors)
        if model_file is None and previous is not None:
            description = previous.description
        else:
            description = model_file.description if model_file else ""
        if model_file is not None:
            options = model_file
        else:
            options = previous.options if previous is not None else ModelFile()
        return ModelEntry(name, description, versions, aliases, errors, options)

    def _aliases(
        self,
        name: str,
        versions: dict[str, ModelVersion],
        model_file: Any,
        previous: ModelEntry | None,
        errors: dict[str, str],
    ) -> dict[str, str]:
        aliases: dict[str, str] = {}
        if versions:
            aliases[LATEST] = max(versions, key=version_sort_key)
        declared = (
            model_file.aliases if model_file is not None else (previous.aliases if previous else {})
        )
        declared = {**declared, **self._alias_overrides.get(name, {})}
        for alias, target in declared.items():
            if alias == LATEST:
                continue
            if target in versions:
                aliases[alias] = target
                continue
            errors[f"alias:{alias}"] = f"alias {alias!r} points at {target!r}, which is not loaded"
            kept = previous.aliases.get(alias) if previous else None
            if kept is not None and kept in versions:
                aliases[alias] = kept
        return aliases

    def _load_version(
        self,
        version_dir: Path,
        fingerprint: tuple[Any, ...],
        model_batching: BatchingSpec | None = None,
    ) -> ModelVersion:
        started = time.perf_counter()
        # Only files inside the repository, and only a verified artifact (paths.py).
        if not self.follow_symlinks:
            refuse_links(self.repository, version_dir / MANIFEST_FILE)
        manifest = load_manifest(version_dir, self.load_options.yaml_cache)
        verified_artifact(
            self.repository, version_dir, manifest, follow_symlinks=self.follow_symlinks
        )
        runtime = load_runtime(version_dir, manifest, self.load_options)
        single_row_us = _warm_up(runtime, manifest)
        reference = manifest.reference
        attack_mask = None
        if manifest.task == "classification":
            attacks = set(manifest.attack_classes)
            attack_mask = np.array([c in attacks for c in manifest.classes], dtype=bool)
        return ModelVersion(
            manifest=manifest,
            runtime=runtime,
            path=version_dir,
            fingerprint=fingerprint,
            loaded_at=datetime.now(UTC),
            single_row_us=single_row_us,
            inline=single_row_us <= self.inline_threshold_us,
            feature_index=_feature_index(manifest),
            reference_mean=np.asarray(reference.mean) if reference else None,
            reference_std=np.asarray(reference.std) if reference else None,
            attack_mask=attack_mask,
            batching=manifest.batching or model_batching,
            load_seconds=time.perf_counter() - started,
        )


def _warm_up(
    runtime: Runtime, manifest: Manifest, rounds: int = 20, budget_s: float = 0.05
) -> float:
    """Run the model on a typical row; check the output shape; return µs per call.

    Times up to ``rounds`` calls but stops once ``budget_s`` is spent, so a slow model
    does not slow down loading much.
    """
    n = len(manifest.features)
    row = (
        np.asarray(manifest.reference.mean, dtype=runtime.input_dtype).reshape(1, n)
        if manifest.reference
        else np.zeros((1, n), dtype=runtime.input_dtype)
    )
    out = np.asarray(runtime.run(row))
    expected: Iterable[int] = (
        (1, len(manifest.classes)) if manifest.task == "classification" else (1,)
    )
    if out.shape != tuple(expected):
        raise ManifestError(
            f"model output has shape {out.shape}, expected {tuple(expected)} for {manifest.task}"
        )
    if not np.all(np.isfinite(out)):
        raise ManifestError("model output on a typical row is not finite")
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(timings) < rounds and (len(timings) < 3 or time.perf_counter() < deadline):
        started = time.perf_counter()
        runtime.run(row)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1e6)
