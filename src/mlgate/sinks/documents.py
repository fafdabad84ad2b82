"""A detection as a document with Elastic Common Schema (ECS) field names.

Both sinks send the same document, so Filebeat or Logstash ship the JSON lines as they
are and a webhook receiver can index what it gets. ECS fields used:

- ``@timestamp`` (when the answer was ready), ``message``, ``ecs.version``;
- ``event.kind: alert``, ``event.category`` (``intrusion_detection`` for classifiers,
  ``host`` for anomaly models), ``event.type: [info]``, ``event.action``
  (``attack-detected`` or ``anomaly-detected``), ``event.id`` (the prediction id, unique:
  receivers dedupe on it), ``event.module: mlgate``, ``event.dataset:
  mlgate.detections``, ``event.created``, ``event.risk_score`` (confidence x 100);
- ``rule.name`` and ``rule.ruleset`` (model and version), ``observer.*`` (this gateway),
  ``user.name`` for authenticated callers, ``client.ip`` for anonymous ones (their
  address), ``device.id`` for per-device readings;
- everything about the prediction under the custom ``mlgate`` namespace.

``source.ip`` is not filled: flow records sent to the bundled models carry no
addresses, and the data plane keeps only the *names* of the fields a model ignores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

import mlgate
from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput, InferenceEvent
from mlgate.registry.manifest import Manifest

ECS_VERSION = "8.11.0"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def detection_documents(
    event: InferenceEvent, rows: np.ndarray, manifest: Manifest
) -> list[dict[str, Any]]:
    """One ECS document per detected row of ``event``."""
    created = _iso(datetime.now(UTC).timestamp())
    output = event.output
    principal = event.principal
    documents = []
    for i in rows.tolist():
        prediction_id = f"{event.prediction_key}-{i}"
        ml: dict[str, Any] = {
            "model": {"name": event.model, "version": event.version, "task": event.task},
            "prediction_id": prediction_id,
            "request_id": event.request_id,
            "protocol": event.protocol,
            "row": i,
            "cache_hit": event.cache_hit,
        }
        if isinstance(output, ClassificationOutput):
            k = int(output.predicted[i])
            confidence = float(output.confidence[i])
            name = manifest.classes[k]
            ml.update(
                predicted_class=k,
                predicted_class_name=name,
                is_attack=bool(output.is_attack[i]),
                probabilities=dict(
                    zip(manifest.classes, output.probabilities[i].tolist(), strict=True)
                ),
            )
            category, action = "intrusion_detection", "attack-detected"
            message = f"{event.model} {event.version}: {name} (confidence {confidence:.3f})"
        else:
            assert isinstance(output, AnomalyOutput)
            confidence = float(output.confidence[i])
            score = float(output.scores[i])
            ml.update(is_anomaly=True, anomaly_score=score, threshold=float(output.threshold))
            category, action = "host", "anomaly-detected"
            message = (
                f"{event.model} {event.version}: anomaly (score {score:.4g} >= "
                f"{float(output.threshold):.4g}, confidence {confidence:.3f})"
            )
        ml["confidence"] = confidence
        document: dict[str, Any] = {
            "@timestamp": _iso(event.timestamp),
            "message": message,
            "ecs": {"version": ECS_VERSION},
            "event": {
                "kind": "alert",
                "category": [category],
                "type": ["info"],
                "action": action,
                "id": prediction_id,
                "module": "mlgate",
                "dataset": "mlgate.detections",
                "created": created,
                "risk_score": round(confidence * 100, 3),
            },
            "rule": {"name": f"{event.model}/{event.version}", "ruleset": "mlgate"},
            "observer": {"vendor": "mlgate", "product": "mlgate", "version": mlgate.__version__},
            "mlgate": ml,
        }
        if principal is not None:
            if principal.kind == "anonymous":
                document["client"] = {"ip": principal.subject}
            else:
                document["user"] = {"name": principal.subject}
        if event.device_id is not None:
            document["device"] = {"id": event.device_id}
        documents.append(document)
    return documents
