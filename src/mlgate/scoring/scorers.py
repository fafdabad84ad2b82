"""Who scores the rows: the data plane in this process, or a server through the client.

Both answer with the same output arrays (the Open Inference Protocol's outputs, by
name), so a file scored locally and remotely gives the same result columns.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlgate.auth.principal import Principal
from mlgate.client import Client, Feature, ModelInfo
from mlgate.client import ValidationError as ClientValidationError
from mlgate.dataplane import InferenceContext, InferenceInput, InferenceResult
from mlgate.dataplane.service import local_dataplane
from mlgate.devices.store import check_device_id
from mlgate.errors import MlgateError, ValidationFailed
from mlgate.protocols.matrix import MatrixCodec
from mlgate.protocols.oip_json import default_outputs, output_specs
from mlgate.registry.registry import ModelVersion

#: Who scores in this process: device baselines belong to an account, and the throwaway
#: database of a local run has one.
LOCAL_CALLER = Principal(
    kind="user", subject="mlgate-predict", scopes=frozenset({"predict"}), tier="local", user_id=1
)


class ScoringError(Exception):
    """Rows the scorer refused: ``row`` (in the matrix given), when known."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.row = row


@dataclass(frozen=True)
class Schema:
    """What the CLI needs to know about the model version that scores the file."""

    model: str
    version: str
    task: str
    features: list[Feature]
    classes: list[str]
    attack_classes: list[str]


class Scorer(Protocol):
    schema: Schema

    def score(self, matrix: np.ndarray, device_id: str | None = None) -> dict[str, np.ndarray]:
        """Output arrays by name (``predicted_class_name``, ``anomaly_score``, …)."""
        ...

    def close(self) -> None: ...


_LOCAL_ROW = re.compile(r"^row (\d+),")


class LocalScorer:
    """The server's data plane in this process: the same validation, substitution rules
    and outputs as over HTTP, without a server. With ``devices``, device baselines live
    in a throwaway SQLite database: every device calibrates on its first readings."""

    def __init__(
        self,
        repository: Path,
        model: str,
        version: str | None,
        *,
        devices: bool = False,
        baseline_readings: int = 400,
    ) -> None:
        self._loop = asyncio.Runner()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._engine: Any = None
        self.dataplane = local_dataplane(repository, default_model=model)
        try:
            self.mv = self.dataplane.resolve(model, version)
        except MlgateError as exc:
            self.close()
            raise ScoringError(exc.message) from None
        if devices:
            self._attach_devices(baseline_readings)
        m = self.mv.manifest
        self.schema = Schema(
            model=self.mv.name,
            version=self.mv.version,
            task=m.task,
            features=[Feature.from_json(f.model_dump()) for f in m.features],
            classes=list(m.classes or []),
            attack_classes=list(m.attack_classes or []),
        )

    def _attach_devices(self, baseline_readings: int) -> None:
        from mlgate.db.engine import build_engine
        from mlgate.db.migrate import upgrade
        from mlgate.devices.detector_store import DetectorStore
        from mlgate.devices.scoring import DeviceScorer
        from mlgate.devices.store import BaselineStore
        from mlgate.devices.windows import ReadingWindows
        from mlgate.settings import Settings

        self._tmp = tempfile.TemporaryDirectory(prefix="mlgate-predict-")
        url = f"sqlite+aiosqlite:///{Path(self._tmp.name) / 'devices.db'}"
        self._engine = build_engine(Settings(database_url=url))
        self._loop.run(upgrade(self._engine))
        store = BaselineStore(self._engine, required=baseline_readings, cache_ttl_s=60.0)
        self.dataplane.devices = DeviceScorer(
            store, ReadingWindows(1_000_000), DetectorStore(self._engine)
        )

    def score(self, matrix: np.ndarray, device_id: str | None = None) -> dict[str, np.ndarray]:
        mv = self.mv
        try:
            codec = MatrixCodec() if device_id is None else _DeviceMatrixCodec(device_id)
            context = InferenceContext("local", principal=LOCAL_CALLER)
            result: InferenceResult = self._loop.run(
                self.dataplane.score(mv.name, mv.version, matrix, codec, context)
            )
        except ValidationFailed as exc:
            row, reason = _local_row(exc.details)
            raise ScoringError(reason or exc.message, row) from None
        except MlgateError as exc:
            raise ScoringError(exc.message) from None
        device = device_id is not None
        specs = output_specs(mv, device)
        return {name: specs[name](mv, result.output) for name in default_outputs(mv, device)}

    def close(self) -> None:
        if self._engine is not None:
            self._loop.run(self._engine.dispose())
        self._loop.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class _DeviceMatrixCodec(MatrixCodec):
    """Rows of one device, in order: scored against the device's baseline."""

    def __init__(self, device_id: str) -> None:
        self.device_id = check_device_id(device_id, "device id")

    def decode(self, payload: np.ndarray, mv: ModelVersion, max_rows: int) -> InferenceInput:
        decoded = super().decode(payload, mv, max_rows)
        return InferenceInput(
            decoded.matrix,
            decoded.ignored,
            decoded.substituted,
            decoded.substituted_total,
            device_id=self.device_id,
        )


def _local_row(details: Any) -> tuple[int | None, str | None]:
    """(row, reason) of the first detail that names a row of the matrix."""
    for detail in details if isinstance(details, list) else []:
        match = _LOCAL_ROW.match(str(detail.get("field", "")))
        if match:
            return int(match[1]), str(detail.get("message", ""))
    return None, None


class RemoteScorer:
    """A server, through :class:`mlgate.client.Client` (binary tensors, chunked under the
    server's batch limit, retried on 429/503). Every chunk is pinned to the version the
    schema was read from."""

    def __init__(self, client: Client, model: str, version: str | None) -> None:
        self.client = client
        info: ModelInfo = client.model(model, version)
        self.schema = Schema(
            model=info.name,
            version=info.version,
            task=info.task,
            features=info.features,
            classes=info.classes,
            attack_classes=info.attack_classes,
        )

    def score(self, matrix: np.ndarray, device_id: str | None = None) -> dict[str, np.ndarray]:
        try:
            result = self.client.predict_array(
                self.schema.model, matrix, version=self.schema.version, device_id=device_id
            )
        except ClientValidationError as exc:
            reason = None
            if exc.row is not None and isinstance(exc.details, list) and exc.details:
                reason = str(exc.details[0].get("message", "")) or None
            raise ScoringError(reason or exc.message, exc.row) from None
        outputs = dict(result.outputs)
        outputs["prediction_id"] = np.asarray(result.prediction_ids, dtype=object)
        return outputs

    def close(self) -> None:
        self.client.close()
