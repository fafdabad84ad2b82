"""The typed values that flow through the data plane: decoded inputs, model outputs,
the result of one request, its context, and the event observers receive.

Outputs keep numpy arrays; only codecs that must emit per-row objects build them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from mlgate.auth.principal import Principal
    from mlgate.registry.registry import ModelVersion

#: Charges ``rows`` to the caller (raises when over the allowance); set by the transport.
RowCharger = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Substitution:
    """One input cell replaced by the value its feature's manifest rule declares."""

    row: int
    field: str
    feature: str
    value: str
    """What was sent: ``NaN``, ``Infinity``, ``-Infinity``, ``null`` or ``empty``."""
    replaced_by: float

    def view(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "feature": self.feature,
            "value": self.value,
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True, slots=True)
class InferenceInput:
    """A decoded request: the model's input matrix and what else the request carried."""

    matrix: np.ndarray
    """(rows, features) in the runtime's dtype, in manifest feature order."""
    ignored: tuple[str, ...] = ()
    """Names the request sent that the model does not use (sorted)."""
    substituted: tuple[Substitution, ...] = ()
    """Cells replaced by their feature's rule (the first 100; see ``substituted_total``)."""
    substituted_total: int = 0
    device_id: str | None = None
    explain: int | None = None
    """Asked for per-row explanations: how many top features each lists."""

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])


@dataclass(frozen=True, slots=True)
class ClassificationOutput:
    """Per-row class probabilities and what follows from them."""

    probabilities: np.ndarray
    """(rows, classes), in the manifest's class order."""
    predicted: np.ndarray
    """(rows,) index of the most probable class."""
    confidence: np.ndarray
    """(rows,) probability of the predicted class."""
    is_attack: np.ndarray
    """(rows,) bool: the predicted class is one of the manifest's attack classes."""

    @property
    def rows(self) -> int:
        return len(self.predicted)


@dataclass(frozen=True, slots=True)
class AnomalyOutput:
    """Per-row anomaly scores and verdicts.

    On the per-device path the first readings of a new device calibrate its baseline
    and get no verdict: ``scored`` is False for them, their ``scores``, ``confidence``
    and ``threshold`` are NaN and ``calibration_seen`` says how far calibration is.
    """

    scores: np.ndarray
    is_anomaly: np.ndarray
    confidence: np.ndarray
    threshold: float
    readings: np.ndarray
    """(rows, features) float64: what explanations compare with the baseline (the
    smoothed readings on the device path, else the input)."""
    center: np.ndarray | None
    """Per-feature typical value explanations compare with (device or training)."""
    spread: np.ndarray | None
    relative_to_device: bool = False
    scored: np.ndarray | None = None
    """(rows,) bool on the device path; None when every row was scored."""
    calibration_seen: np.ndarray | None = None
    calibration_required: int | None = None
    device_detector: bool = False
    """Verdicts of the device's own detector (debounced alarms), not of the model's
    detector against a baseline; ``center``/``spread`` are NaN for unused sensors."""

    @property
    def rows(self) -> int:
        return len(self.scores)

    def is_scored(self, i: int) -> bool:
        return self.scored is None or bool(self.scored[i])


Output = ClassificationOutput | AnomalyOutput


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What the data plane hands a codec to encode."""

    model: ModelVersion
    inputs: InferenceInput
    output: Output
    processing_time_ms: float
    request_id: str | None
    prediction_key: str
    """Row ``i`` of this request is prediction ``<prediction_key>-<i>``."""
    cache_hit: bool = False
    explanations: list[dict[str, Any]] | None = None
    """Per-row feature contributions, when the request asked for them."""

    def prediction_id(self, row: int) -> str:
        return f"{self.prediction_key}-{row}"

    def prediction_ids(self) -> list[str]:
        key = self.prediction_key
        return [f"{key}-{i}" for i in range(self.output.rows)]


@dataclass(slots=True)
class InferenceContext:
    """Who is asking, through which protocol, and how to charge them.

    Built by the transport (an HTTP route, the CLI); the data plane reads it and leaves
    response headers in ``headers``.
    """

    protocol: str
    principal: Principal | None = None
    request_id: str | None = None
    charge_rows: RowCharger | None = None
    disconnected: Callable[[], Awaitable[object]] | None = None
    """Completes when the client goes away (lets queued work be abandoned)."""
    started: float = field(default_factory=time.perf_counter)
    headers: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    """The caller asked for a fresh answer (``Cache-Control: no-cache``)."""
    no_store: bool = False
    """The caller asked that its answer not be kept (``Cache-Control: no-store``)."""


@dataclass(frozen=True, slots=True)
class InferenceEvent:
    """One answered inference request, as observers (audit, metrics, drift) see it."""

    request_id: str | None
    principal: Principal | None
    protocol: str
    model: str
    version: str
    task: str
    rows: int
    latency_ms: float
    timestamp: float
    """Wall-clock time (seconds since the epoch) at which the answer was ready."""
    inputs: InferenceInput
    output: Output
    prediction_key: str
    """Row ``i`` is prediction ``<prediction_key>-<i>``."""
    device_id: str | None = None
    cache_hit: bool = False
    """The output came from the prediction cache."""
    shadow: bool = False
    """Scored by a shadow (challenger) version off the request path; never returned."""


class InferenceObserver(Protocol):
    """Receives every answered request. Must return at once: append to a queue, bump a
    counter; never I/O on the request path."""

    def observe(self, event: InferenceEvent) -> None: ...


class Codec(Protocol):
    """A wire shape: turns a parsed request into model input and a result into bytes.

    Parsing the body into the codec's payload happens in the transport, before the
    model version is known; ``decode`` needs the version (its feature schema).
    """

    protocol: str

    def decode(self, payload: Any, mv: ModelVersion, max_rows: int) -> InferenceInput:
        """The payload as model input for ``mv`` (422 naming the field when invalid;
        batches of more than ``max_rows`` rows refused before any per-row work)."""
        ...

    def encode(self, result: InferenceResult, payload: Any) -> Encoded:
        """The response body for ``result``."""
        ...


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded response body."""

    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
