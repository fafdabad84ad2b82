"""From raw model output (probabilities, scores) to typed outputs, and batch summaries.

Everything is computed on whole arrays; nothing here builds one object per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput, Output
from mlgate.registry.registry import ModelVersion


def classification_output(mv: ModelVersion, probabilities: np.ndarray) -> ClassificationOutput:
    """Winners, their probabilities and attack flags for (rows, classes) probabilities."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    is_attack = (
        mv.attack_mask[predicted] if mv.attack_mask is not None else np.zeros(len(predicted), bool)
    )
    return ClassificationOutput(probabilities, predicted, confidence, is_attack)


def confidence_of(scores: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """Confidence in a verdict: 0.5 at the threshold, towards 1 far from it."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.abs(scores - threshold) / scale)))


def anomaly_output(mv: ModelVersion, scores: np.ndarray, x: np.ndarray) -> AnomalyOutput:
    """Verdicts against the manifest's threshold; explanations relative to the training
    reference."""
    threshold = float(mv.manifest.threshold or 0.0)
    scale = float(mv.manifest.score_scale or 1.0)
    return AnomalyOutput(
        scores=scores,
        is_anomaly=scores >= threshold,
        confidence=confidence_of(scores, threshold, scale),
        threshold=threshold,
        readings=np.asarray(x, dtype=np.float64),
        center=mv.reference_mean,
        spread=mv.reference_std,
    )


def summarize(mv: ModelVersion, output: Output) -> dict[str, Any]:
    """Batch summary: counts per class and attack rate, or anomaly count and rate."""
    total = output.rows
    if isinstance(output, ClassificationOutput):
        classes = mv.manifest.classes
        counts = np.bincount(output.predicted, minlength=len(classes)).tolist()
        attacks = int(output.is_attack.sum())
        return {
            "total": total,
            "class_counts": dict(zip(classes, counts, strict=True)),
            "attacks": attacks,
            "attack_rate": attacks / total if total else 0.0,
        }
    anomalies = int(output.is_anomaly.sum())
    summary: dict[str, Any] = {
        "total": total,
        "anomalies": anomalies,
        "anomaly_rate": anomalies / total if total else 0.0,
    }
    if output.scored is not None:
        summary["calibrating"] = int((~output.scored).sum())
    return summary
