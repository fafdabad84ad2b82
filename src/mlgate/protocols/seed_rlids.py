"""The RL-IDS seed client's shapes: ``POST /predict`` with ``{"features": [...]}`` and
``POST /predict/batch`` with a JSON list of such objects, on the default model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlgate.dataplane.types import ClassificationOutput, Encoded, InferenceInput, InferenceResult
from mlgate.dataplane.validation import Problems
from mlgate.errors import ValidationFailed
from mlgate.protocols.common import json_encoded, now_iso
from mlgate.protocols.json_rows import decode_instance, decode_instances
from mlgate.registry.registry import ModelVersion


@dataclass(frozen=True, slots=True)
class RlidsPayload:
    """One flow's features, or the features of each flow of a batch."""

    data: Any
    batch: bool


def parse_single(body: dict[str, Any]) -> RlidsPayload:
    return RlidsPayload(body["features"], batch=False)


def parse_batch(items: list[Any]) -> RlidsPayload:
    """The ``features`` of each object of the list (422 naming the first bad items)."""
    problems = Problems()
    instances = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and "features" in item:
            instances.append(item["features"])
        else:
            problems.add(f"[{i}]", "expected an object with features")
    if problems:
        first = problems.errors[0]
        raise ValidationFailed(
            f"invalid batch: {first['field']}: {first['message']}", details=problems.errors
        )
    return RlidsPayload(instances, batch=True)


class RlidsCodec:
    """The RL-IDS client's request and response shapes."""

    protocol = "seed-rlids"

    def decode(self, payload: RlidsPayload, mv: ModelVersion, max_rows: int) -> InferenceInput:
        if not payload.batch:
            return decode_instance(payload.data, mv)
        paths = [f"[{i}].features" for i in range(len(payload.data))]
        return decode_instances(payload.data, mv, field="body", max_rows=max_rows, paths=paths)

    def encode(self, result: InferenceResult, payload: RlidsPayload) -> Encoded:
        mv, out = result.model, result.output
        assert isinstance(out, ClassificationOutput)
        classes = mv.manifest.classes
        common = {
            "class_names": classes,
            "processing_time_ms": round(result.processing_time_ms, 3),
            "model_name": mv.name,
            "model_version": mv.version,
            "request_id": result.request_id,
            "timestamp": now_iso(),
        }
        rows = [
            {
                "predicted_class": k,
                "predicted_class_name": classes[k],
                "confidence": c,
                "is_attack": a,
                # The RL-IDS client reads a list in class order; the names are alongside.
                "probabilities": p,
                **common,
            }
            for k, c, a, p in zip(
                out.predicted.tolist(),
                out.confidence.tolist(),
                out.is_attack.tolist(),
                out.probabilities.tolist(),
                strict=True,
            )
        ]
        for s in result.inputs.substituted:  # only when cells were replaced: seed clients
            rows[s.row].setdefault("substituted", []).append(s.view())  # see the old shape
        return json_encoded(rows if payload.batch else rows[0])
