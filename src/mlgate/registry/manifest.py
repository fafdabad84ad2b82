"""The model manifest: what a version on disk declares about itself.

A model repository is laid out as ``<repo>/<name>/<version>/manifest.yaml`` plus the
artifact the manifest names. An optional ``<repo>/<name>/model.yaml`` holds model-level
settings (aliases such as ``stable``, a description).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlgate.registry.yaml_cache import YamlCache

MANIFEST_FILE = "manifest.yaml"
MODEL_FILE = "model.yaml"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"

Task = Literal["classification", "anomaly"]


class ManifestError(ValueError):
    """A manifest or model file is missing, unreadable or inconsistent."""


class FeatureSpec(BaseModel):
    """One input feature, in the order the model expects it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    unit: str | None = None
    # What training did with cells a raw data source leaves missing or non-finite; the
    # server applies the same rule (and reports it). None: such a cell is refused (422).
    missing_value: float | None = Field(
        default=None, description="Value that replaces NaN, null or an empty cell."
    )
    infinite_value: float | None = Field(
        default=None, description="Value that replaces +Infinity or -Infinity."
    )

    @model_validator(mode="after")
    def _finite_rules(self) -> FeatureSpec:
        for rule in (self.missing_value, self.infinite_value):
            if rule is not None and not math.isfinite(rule):
                raise ValueError("missing_value and infinite_value must be finite numbers")
        return self


class Reference(BaseModel):
    """Per-feature statistics of the training data (normal data for anomaly models).

    Used to explain anomalies (which sensors deviate, by how many standard deviations)
    and as the baseline for input drift.
    """

    model_config = ConfigDict(extra="forbid")

    mean: list[float]
    std: list[float]
    quantiles: dict[str, list[float]] = Field(default_factory=dict)
    bin_shares: list[list[float]] | None = None
    """Per feature, the share of the training rows in each bin the quantiles cut
    (increasing probability, right-closed bins, see :mod:`mlgate.drift.reference`):
    the baseline of input drift. Without it, drift estimates the shares from the
    quantile probabilities, which is poor for features with repeated values."""


class DeviceBaseline(BaseModel):
    """How an anomaly model scores readings against a per-device baseline.

    A reading ``x`` of a device with baseline mean/std ``m``/``s`` is first smoothed (the
    mean of the device's last ``window`` readings), then mapped onto the training data,
    ``x' = reference.mean + (x - m) / s * reference.std``, and scored by the artifact;
    ``score >= threshold`` is an anomaly. ``threshold`` and ``score_scale`` replace the
    global ones for such readings; ``required_readings`` is how many readings the
    baseline was calibrated on when the threshold was chosen.
    """

    model_config = ConfigDict(extra="forbid")

    required_readings: int = Field(ge=2)
    window: int = Field(default=1, ge=1, le=1000)
    threshold: float
    score_scale: float | None = Field(default=None, gt=0)
    metrics: dict[str, Any] = Field(default_factory=dict)


class DeviceDetectorSpec(BaseModel):
    """A per-device detector recipe (``mlgate.devices.detectors``), for serving to fit on
    each device's own calibration window.

    Every device's first ``calibration_readings`` readings of ``features`` (a subset of
    the model's features, in this order) are passed to ``detectors.fit`` with ``params``
    (a ``DetectorParams`` as a dict); the fitted ``DeviceModel`` (JSON) is the device's
    state, and later readings are scored with ``detectors.score``. ``metrics`` holds the
    leave-runs-out cross-validation that chose the recipe.
    """

    model_config = ConfigDict(extra="forbid")

    features: list[str] = Field(min_length=1)
    calibration_readings: int = Field(ge=8)
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _valid_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        from mlgate.devices.detectors import DetectorParams  # the package imports this one

        try:
            DetectorParams.from_dict(dict(params))
        except TypeError as exc:
            raise ValueError(f"device_detector params: {exc}") from None
        return params


class ExplainerSpec(BaseModel):
    """A file beside the artifact that explains single predictions (``mlgate.explain``).

    ``kind`` names the method (``tree_shap``: the trees as arrays for exact TreeSHAP;
    ``integrated_gradients``: the network's weights for exact integrated gradients);
    the file's SHA-256 is checked before it is used.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1)
    file: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    output: str = ""
    reference: str = ""


class BatchingSpec(BaseModel):
    """Adaptive batching of one model (version): concurrent requests share model calls.

    Unset fields take the server's defaults (``MLGATE_MODELS__BATCHING_*``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=100_000)
    """Most rows one model call takes."""
    max_delay_ms: float | None = Field(default=None, ge=0, le=1000)
    """How long the first queued request waits for others to join its batch."""


class CacheSpec(BaseModel):
    """The prediction cache for one model (``cache:`` in model.yaml).

    Exact match on the resolved version and the canonical input; see
    :mod:`mlgate.cache`. Unset fields take the server's defaults (``MLGATE_CACHE__*``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ttl_s: float | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    """How long an answer is reused; unset: ``MLGATE_CACHE__TTL_S``."""


class DetectionSpec(BaseModel):
    """Which answers of a model leave as detections to the sinks (``detections:`` in
    model.yaml, or ``MLGATE_SINKS__RULES``).

    Classification: a row whose predicted class is one of ``classes`` (default: the
    manifest's attack classes) with a confidence of at least ``min_confidence``.
    Anomaly: a row with an anomaly verdict and at least that confidence.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    classes: list[str] | None = None
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class Manifest(BaseModel):
    """Everything a model version declares: identity, runtime, schema, outputs, metrics."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    runtime: str = Field(min_length=1)
    task: Task
    artifact: str = Field(min_length=1)
    artifact_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    description: str = ""
    features: list[FeatureSpec] = Field(min_length=1)
    # Classification: class names in output order, and which of them are attacks.
    classes: list[str] = Field(default_factory=list)
    attack_classes: list[str] = Field(default_factory=list)
    # Anomaly: score >= threshold means anomalous; score_scale converts the distance to
    # the threshold into a confidence (typically the spread of validation scores).
    threshold: float | None = None
    score_scale: float | None = Field(default=None, gt=0)
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    reference: Reference | None = None
    # Optional: the model can score readings against per-device baselines.
    device_baseline: DeviceBaseline | None = None
    batching: BatchingSpec | None = None
    # Optional: a per-device detector recipe (see DeviceDetectorSpec).
    device_detector: DeviceDetectorSpec | None = None
    # Optional: a file to explain single predictions with (see ExplainerSpec).
    explainer: ExplainerSpec | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> Manifest:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        all_names = names + [a for f in self.features for a in f.aliases]
        if len(set(all_names)) != len(all_names):
            raise ValueError("feature aliases must not repeat a feature name or another alias")
        if self.task == "classification":
            if len(self.classes) < 2:
                raise ValueError("a classification model needs at least two classes")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("class names must be unique")
            unknown = set(self.attack_classes) - set(self.classes)
            if unknown:
                raise ValueError(f"attack_classes not among classes: {sorted(unknown)}")
        elif self.threshold is None:
            raise ValueError("an anomaly model needs a threshold")
        if self.device_detector is not None:
            if self.task != "anomaly":
                raise ValueError("device_detector needs an anomaly model")
            unknown = set(self.device_detector.features) - set(names)
            if unknown:
                raise ValueError(f"device_detector features not among features: {sorted(unknown)}")
        if self.device_baseline is not None and (self.task != "anomaly" or self.reference is None):
            raise ValueError("device_baseline needs an anomaly model with a reference")
        if self.reference is not None:
            n = len(self.features)
            if len(self.reference.mean) != n or len(self.reference.std) != n:
                raise ValueError("reference mean/std must have one value per feature")
            shares = self.reference.bin_shares
            if shares is not None:
                bins = len(self.reference.quantiles) + 1
                if len(shares) != n or any(len(row) != bins for row in shares):
                    raise ValueError(
                        "reference bin_shares must have one row per feature of one share "
                        "per bin (quantiles + 1)"
                    )
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_yaml(self) -> str:
        """Serialise for writing next to the artifact."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


class ModelFile(BaseModel):
    """Model-level settings in ``<repo>/<name>/model.yaml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    aliases: dict[str, str] = Field(default_factory=dict)
    batching: BatchingSpec | None = None
    """Batching of every version (a version's manifest may override it)."""
    cache: CacheSpec | None = None
    """The prediction cache for this model (off unless set here or in MLGATE_CACHE__MODELS)."""
    detections: DetectionSpec | None = None
    """Which answers leave as detections to the configured sinks (webhook, ECS file)."""

    @model_validator(mode="after")
    def _check_aliases(self) -> ModelFile:
        import re

        for alias in self.aliases:
            if not re.match(ALIAS_PATTERN, alias):
                raise ValueError(f"bad alias name {alias!r}")
            if alias == "latest":
                raise ValueError("'latest' is computed, it cannot be set in model.yaml")
        return self


def shown_path(path: Path, levels: int) -> str:
    """``path`` as load errors show it: its last ``levels`` parts (``ids/3/manifest.yaml``),
    never the server's absolute path (the API shows load errors)."""
    return "/".join(path.parts[-levels:])


_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path, shown: str, cache: YamlCache | None = None) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{shown} does not exist") from None
    except OSError as exc:
        raise ManifestError(f"{shown} cannot be read: {exc.strerror}") from None
    if cache is None:
        return _parse_yaml(data, shown)
    key = cache.key(data)
    found, document = cache.get(key)
    if not found:
        document = _parse_yaml(data, shown)
        cache.put(key, document)
    return document


def _parse_yaml(data: bytes, shown: str) -> Any:
    try:
        # A string: errors name no file path. libyaml's loader parses the manifests
        # (with their reference profiles) about 10x faster than the pure-Python one.
        return yaml.load(data.decode("utf-8"), Loader=_SAFE_LOADER)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{shown} cannot be read: not UTF-8 ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{shown} cannot be read: {exc}") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_manifest(version_dir: Path, cache: YamlCache | None = None) -> Manifest:
    """Read and validate ``manifest.yaml`` in a version directory (parsed once per
    content with a ``cache``)."""
    shown = shown_path(version_dir / MANIFEST_FILE, 3)
    raw = _read_yaml(version_dir / MANIFEST_FILE, shown, cache)
    if not isinstance(raw, dict):
        raise ManifestError(f"{shown} is not a mapping")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{shown}: {_validation_message(exc)}") from None
    if manifest.name != version_dir.parent.name or manifest.version != version_dir.name:
        raise ManifestError(
            f"{shown} says {manifest.name}/{manifest.version} but lives "
            f"in {version_dir.parent.name}/{version_dir.name}"
        )
    return manifest


def load_model_file(model_dir: Path, cache: YamlCache | None = None) -> ModelFile:
    """Read ``model.yaml`` of a model directory; absent means no settings."""
    path = model_dir / MODEL_FILE
    if not path.exists():
        return ModelFile()
    shown = shown_path(path, 2)
    raw = _read_yaml(path, shown, cache) or {}
    try:
        return ModelFile.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{shown}: {_validation_message(exc)}") from None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
