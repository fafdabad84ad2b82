"""Typed results: what the server's JSON answers mean, as frozen dataclasses.

Each keeps the answer it was built from in ``raw``, so fields the server adds later
are not lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Health:
    """``GET /health``: status, server version, uptime and the models loaded."""

    status: str
    version: str
    uptime_seconds: float
    models_loaded: list[str]
    raw: Json = field(repr=False)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @classmethod
    def from_json(cls, body: Json) -> Health:
        return cls(
            status=body["status"],
            version=body.get("version", ""),
            uptime_seconds=float(body.get("uptime_seconds", 0.0)),
            models_loaded=list(body.get("models_loaded", [])),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """``GET /info``: server version, served models and the batch limit."""

    name: str
    version: str
    default_model: str
    models: list[str]
    max_batch_rows: int
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, body: Json) -> ServerInfo:
        return cls(
            name=body.get("name", "mlgate"),
            version=body.get("version", ""),
            default_model=body.get("default_model", ""),
            models=list(body.get("models", [])),
            max_batch_rows=int(body["max_batch_rows"]),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Feature:
    """One input feature of a model: its name, aliases and declared substitutions."""

    name: str
    aliases: tuple[str, ...] = ()
    description: str | None = None
    unit: str | None = None
    missing_value: float | None = None
    infinite_value: float | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The name first, then the aliases: every spelling a column may have."""
        return (self.name, *self.aliases)

    @classmethod
    def from_json(cls, body: Json) -> Feature:
        return cls(
            name=body["name"],
            aliases=tuple(body.get("aliases", ())),
            description=body.get("description"),
            unit=body.get("unit"),
            missing_value=body.get("missing_value"),
            infinite_value=body.get("infinite_value"),
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model version's schema: ``GET /v1/models/{model}`` or ``.../versions/{v}``."""

    name: str
    version: str
    """The version this schema belongs to (the default version for the model view)."""
    task: Literal["classification", "anomaly"]
    features: list[Feature]
    classes: list[str]
    attack_classes: list[str]
    threshold: float | None
    metrics: Json
    description: str | None
    default_version: str | None
    aliases: dict[str, str]
    versions: list[str]
    raw: Json = field(repr=False)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def n_features(self) -> int:
        return len(self.features)

    @classmethod
    def from_model_json(cls, body: Json) -> ModelInfo:
        """From ``GET /v1/models/{model}`` (the default version's schema)."""
        schema = body.get("schema") or {}
        default = body.get("default_version")
        versions = body.get("versions", [])
        current = next(
            (v for v in versions if isinstance(v, dict) and v.get("version") == default), {}
        )
        return cls(
            name=body["name"],
            version=str(default),
            task=body.get("task") or current["task"],
            features=[Feature.from_json(f) for f in schema.get("features", [])],
            classes=list(schema.get("classes") or []),
            attack_classes=list(schema.get("attack_classes") or []),
            threshold=schema.get("threshold"),
            metrics=body.get("metrics") or {},
            description=body.get("description"),
            default_version=default,
            aliases=dict(body.get("aliases") or {}),
            versions=[v["version"] if isinstance(v, dict) else str(v) for v in versions],
            raw=body,
        )

    @classmethod
    def from_version_json(cls, body: Json) -> ModelInfo:
        """From ``GET /v1/models/{model}/versions/{version}``."""
        return cls(
            name=body["name"],
            version=str(body["version"]),
            task=body["task"],
            features=[Feature.from_json(f) for f in body.get("features", [])],
            classes=list(body.get("classes") or []),
            attack_classes=list(body.get("attack_classes") or []),
            threshold=body.get("threshold"),
            metrics=body.get("metrics") or {},
            description=body.get("description"),
            default_version=None,
            aliases={},
            versions=[str(body["version"])],
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One entry of ``GET /v1/models``."""

    name: str
    task: str | None
    default_version: str | None
    versions: list[str]
    aliases: dict[str, str]
    n_features: int | None
    load_errors: dict[str, str]
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, body: Json) -> ModelSummary:
        return cls(
            name=body["name"],
            task=body.get("task"),
            default_version=body.get("default_version"),
            versions=[str(v) for v in body.get("versions", [])],
            aliases=dict(body.get("aliases") or {}),
            n_features=body.get("n_features"),
            load_errors=dict(body.get("load_errors") or {}),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """One scored row: a class (classifiers) or an anomaly verdict (anomaly models).

    Fields of the other kind are None. On the per-device path a calibrating reading has
    ``status == "calibrating"`` and no verdict (``is_anomaly`` None).
    """

    prediction_id: str
    model: str
    model_version: str
    predicted_class: int | None = None
    predicted_class_name: str | None = None
    probabilities: dict[str, float] | None = None
    is_attack: bool | None = None
    is_anomaly: bool | None = None
    anomaly_score: float | None = None
    threshold: float | None = None
    explanation: str | None = None
    deviations: list[Json] | None = None
    status: str | None = None
    calibration: Json | None = None
    confidence: float | None = None
    device_id: str | None = None
    raw: Json = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> Literal["classification", "anomaly"]:
        return "classification" if self.predicted_class is not None else "anomaly"

    @classmethod
    def from_row(cls, row: Json, model: str, version: str, device_id: str | None) -> Prediction:
        return cls(
            prediction_id=row.get("prediction_id", ""),
            model=model,
            model_version=version,
            predicted_class=row.get("predicted_class"),
            predicted_class_name=row.get("predicted_class_name"),
            probabilities=row.get("probabilities"),
            is_attack=row.get("is_attack"),
            is_anomaly=row.get("is_anomaly"),
            anomaly_score=row.get("anomaly_score"),
            threshold=row.get("threshold"),
            explanation=row.get("explanation"),
            deviations=row.get("deviations"),
            status=row.get("status"),
            calibration=row.get("calibration"),
            confidence=row.get("confidence"),
            device_id=device_id,
            raw=row,
        )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Predictions of many rows, in input order (over every chunk the call sent)."""

    model: str
    model_version: str
    predictions: list[Prediction]
    ignored_features: list[str]
    request_ids: list[str]
    """One per request sent (a batch larger than the server's limit takes several)."""

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    def __getitem__(self, i: int) -> Prediction:
        return self.predictions[i]

    @property
    def summary(self) -> Json:
        """Counts per class and attack rate, or anomalies and anomaly rate (as the
        server's batch summary, over all rows)."""
        return summarize(self.predictions)


def summarize(predictions: Sequence[Prediction]) -> Json:
    """The server's batch summary computed over any number of predictions."""
    total = len(predictions)
    if predictions and predictions[0].kind == "classification":
        counts: dict[str, int] = {}
        for p in predictions:
            assert p.predicted_class_name is not None
            counts[p.predicted_class_name] = counts.get(p.predicted_class_name, 0) + 1
        attacks = sum(1 for p in predictions if p.is_attack)
        return {
            "total": total,
            "class_counts": counts,
            "attacks": attacks,
            "attack_rate": attacks / total if total else 0.0,
        }
    anomalies = sum(1 for p in predictions if p.is_anomaly)
    summary: Json = {
        "total": total,
        "anomalies": anomalies,
        "anomaly_rate": anomalies / total if total else 0.0,
    }
    calibrating = sum(1 for p in predictions if p.status == "calibrating")
    if calibrating:
        summary["calibrating"] = calibrating
    return summary


@dataclass(frozen=True, slots=True)
class ArrayResult:
    """Outputs of a tensor call (the Open Inference Protocol), as numpy arrays.

    Classifiers: ``probabilities`` [N, C], ``predicted_class``, ``predicted_class_name``,
    ``confidence``, ``is_attack``; anomaly models: ``anomaly_score``, ``is_anomaly``,
    ``confidence`` (and ``calibrating``, ``calibration_seen`` for a device).
    """

    model: str
    model_version: str
    outputs: Mapping[str, Any]
    prediction_ids: list[str]
    request_ids: list[str]

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    def __len__(self) -> int:
        return len(self.prediction_ids)


@dataclass(frozen=True, slots=True)
class User:
    """A user as the admin API shows it (never a password)."""

    id: int
    username: str
    disabled: bool
    tier: str
    scopes: list[str]
    has_password: bool
    rate_limit_overrides: Json | None
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, body: Json) -> User:
        return cls(
            id=body["id"],
            username=body["username"],
            disabled=body["disabled"],
            tier=body["tier"],
            scopes=list(body["scopes"]),
            has_password=body.get("has_password", False),
            rate_limit_overrides=body.get("rate_limit_overrides"),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as the admin API shows it; ``key`` is set only in the answer that
    created it (the server never shows it again)."""

    id: int
    prefix: str
    name: str
    user_id: int
    username: str
    scopes: list[str]
    tier: str
    status: str
    expires_at: str | None
    revoked_at: str | None
    key: str | None = field(default=None, repr=False)
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: Json) -> ApiKey:
        return cls(
            id=body["id"],
            prefix=body["prefix"],
            name=body["name"],
            user_id=body["user_id"],
            username=body["username"],
            scopes=list(body["scopes"]),
            tier=body["tier"],
            status=body["status"],
            expires_at=body.get("expires_at"),
            revoked_at=body.get("revoked_at"),
            key=body.get("key"),
            raw={k: v for k, v in body.items() if k != "key"},
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """``GET /v1/users/me``: who the credentials belong to."""

    kind: str
    subject: str
    scopes: list[str]
    tier: str
    user_id: int | None
    key_id: int | None
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, body: Json) -> Principal:
        return cls(
            kind=body["kind"],
            subject=body["subject"],
            scopes=list(body["scopes"]),
            tier=body["tier"],
            user_id=body.get("user_id"),
            key_id=body.get("key_id"),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Feedback:
    """The server's answer to ground truth sent for one prediction."""

    prediction_id: str
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, prediction_id: str, body: Json) -> Feedback:
        return cls(prediction_id=str(body.get("prediction_id", prediction_id)), raw=body)
