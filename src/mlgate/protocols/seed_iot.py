"""The IoT seed client's shapes: ``POST /predict`` with ``sensor_data`` and
``model_name``, ``POST /predict/batch`` with ``readings``; ``device_id`` optional."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.dataplane.outputs import summarize
from mlgate.dataplane.types import AnomalyOutput, Encoded, InferenceInput, InferenceResult
from mlgate.dataplane.validation import json_type
from mlgate.errors import ModelNotFound, ValidationFailed
from mlgate.protocols.common import json_encoded, now_iso, optional_device_id
from mlgate.protocols.json_rows import decode_instance, decode_instances
from mlgate.protocols.results import anomaly_rows
from mlgate.registry.registry import ModelVersion


@dataclass(frozen=True, slots=True)
class IotPayload:
    """One reading (``sensor_data``) or several (``readings``), and the detector."""

    data: Any
    batch: bool
    model: str
    """The registry model that scores it."""
    model_used: str
    """The name the client asked for, echoed as ``model_used``."""
    device_id: str | None


def _detector(body: dict[str, Any], detectors: Mapping[str, str], default: str) -> tuple[str, str]:
    """(registry model, name to echo as model_used) for an IoT request."""
    name = body.get("model_name")
    if name is None:
        return default, default
    if not isinstance(name, str):
        raise ValidationFailed(
            f"model_name must be a string, got {json_type(name)}",
            details=[{"field": "model_name", "message": "expected string"}],
        )
    if name in detectors:
        return detectors[name], name
    raise ModelNotFound(
        f"unknown model_name {name!r}; use one of {', '.join(sorted(detectors))}",
        details={"field": "model_name", "available": sorted(detectors)},
    )


def parse(
    body: dict[str, Any], *, batch: bool, detectors: Mapping[str, str], default: str
) -> IotPayload:
    """An IoT request body with ``sensor_data`` (single) or ``readings`` (batch)."""
    model, used = _detector(body, detectors, default)
    data = body["readings"] if batch else body["sensor_data"]
    return IotPayload(data, batch, model, used, optional_device_id(body))


def _device_fields(payload: IotPayload, row: dict[str, Any] | None) -> dict[str, Any]:
    """Fields a device reading adds (none without ``device_id``: seed clients see the
    same body as before)."""
    out: dict[str, Any] = {}
    if payload.device_id is not None and (row is None or not payload.batch):
        out["device_id"] = payload.device_id
    if row is not None and "status" in row:
        out["status"] = row["status"]
        if "calibration" in row:
            out["calibration"] = row["calibration"]
    return out


class IotCodec:
    """The IoT client's request and response shapes."""

    protocol = "seed-iot"

    def decode(self, payload: IotPayload, mv: ModelVersion, max_rows: int) -> InferenceInput:
        if payload.batch:
            return decode_instances(
                payload.data,
                mv,
                field="readings",
                max_rows=max_rows,
                device_id=payload.device_id,
            )
        return decode_instance(payload.data, mv, field="sensor_data", device_id=payload.device_id)

    def encode(self, result: InferenceResult, payload: IotPayload) -> Encoded:
        mv, out = result.model, result.output
        assert isinstance(out, AnomalyOutput)
        rows = anomaly_rows(mv, out)
        common = {
            "model_used": payload.model_used,
            "model_version": mv.version,
        }
        notes: dict[str, Any] = {"ignored_features": list(result.inputs.ignored)}
        if result.inputs.substituted:
            notes["substituted"] = [s.view() for s in result.inputs.substituted]
        timing = {
            "processing_time_ms": round(result.processing_time_ms, 3),
            "request_id": result.request_id,
        }
        timestamp = now_iso()
        if not payload.batch:
            row = rows[0]
            return json_encoded(
                {
                    **_device_fields(payload, row),
                    "is_anomaly": row["is_anomaly"],
                    "anomaly_score": row["anomaly_score"],
                    "confidence": row["confidence"],
                    **common,
                    "timestamp": timestamp,
                    "explanation": row["explanation"],
                    "deviations": row["deviations"],
                    **notes,
                    **timing,
                }
            )
        predictions = [
            {
                **_device_fields(payload, row),
                "index": i,
                "is_anomaly": row["is_anomaly"],
                "anomaly_score": row["anomaly_score"],
                "confidence": row["confidence"],
                "explanation": row["explanation"],
                "timestamp": timestamp,
            }
            for i, row in enumerate(rows)
        ]
        summary = summarize(mv, out)
        return json_encoded(
            {
                **_device_fields(payload, None),
                "predictions": predictions,
                "total_samples": summary["total"],
                "anomalies_detected": summary["anomalies"],
                "anomaly_rate": summary["anomaly_rate"],
                **common,
                **notes,
                **timing,
            }
        )
