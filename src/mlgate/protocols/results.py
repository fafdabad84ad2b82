"""Per-row result objects, for the JSON codecs that emit one object per row (v1 and the
seed shapes), including the readable explanation of an anomaly verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput
from mlgate.registry.registry import ModelVersion

#: Deviation (in standard deviations) from which a reading counts as unusual.
DEVIATION_Z = 2.0
EXPLAIN_TOP = 3


def classification_rows(mv: ModelVersion, out: ClassificationOutput) -> list[dict[str, Any]]:
    """One result per row: class, name, confidence, probabilities by name, is_attack."""
    classes = mv.manifest.classes
    return [
        {
            "predicted_class": k,
            "predicted_class_name": classes[k],
            "confidence": c,
            "probabilities": dict(zip(classes, row, strict=True)),
            "is_attack": a,
        }
        for k, c, row, a in zip(
            out.predicted.tolist(),
            out.confidence.tolist(),
            out.probabilities.tolist(),
            out.is_attack.tolist(),
            strict=True,
        )
    ]


def _explain(
    mv: ModelVersion, out: AnomalyOutput, i: int, z: np.ndarray | None, is_anomaly: bool
) -> tuple[str, list[dict[str, Any]]]:
    if z is None or out.center is None:
        text = "anomaly score above the threshold" if is_anomaly else "within normal parameters"
        return text, []
    normal = "normal"
    if out.relative_to_device:
        normal = "the device's calibration" if out.device_detector else "the device's baseline"
    row, center = out.readings[i], out.center
    names = mv.manifest.feature_names
    # Sensors a device's detector does not use have no z-score (NaN): left out.
    order = [j for j in np.argsort(-np.abs(z)) if np.isfinite(z[j])]
    deviations = [
        {
            "feature": names[j],
            "value": float(row[j]),
            "expected": float(center[j]),
            "z_score": round(float(z[j]), 2),
        }
        for j in order[:EXPLAIN_TOP]
    ]
    notable = [d for d in deviations if abs(d["z_score"]) >= DEVIATION_Z]
    if notable:
        parts = [
            f"{d['feature']} {abs(d['z_score']):.1f}σ {'above' if d['z_score'] > 0 else 'below'} "
            f"{normal} ({d['value']:.4g} vs typical {d['expected']:.4g})"
            for d in notable
        ]
        lead = "Sensors deviating most: " if is_anomaly else "Normal overall, but "
        return lead + "; ".join(parts), deviations
    if is_anomaly and deviations:
        top = deviations[0]
        return (
            "Unusual combination of readings, no single sensor far from normal "
            f"(largest: {top['feature']} {abs(top['z_score']):.1f}σ "
            f"{'above' if top['z_score'] > 0 else 'below'})",
            deviations,
        )
    return "Operating within normal parameters", deviations


def _calibrating(seen: int, required: int, what: str) -> dict[str, Any]:
    return {
        "status": "calibrating",
        "calibration": {"seen": seen, "required": required},
        "is_anomaly": None,
        "anomaly_score": None,
        "threshold": None,
        "confidence": None,
        "explanation": f"Calibrating the device {what} ({seen} of {required} readings)",
        "deviations": [],
    }


def anomaly_rows(mv: ModelVersion, out: AnomalyOutput) -> list[dict[str, Any]]:
    """One result per row: verdict, score, confidence and a readable explanation (on the
    device path also ``status``, and the calibration progress of calibrating rows)."""
    z = None
    if out.center is not None and out.spread is not None:
        z = (out.readings - out.center) / np.where(out.spread > 0, out.spread, 1.0)
    results: list[dict[str, Any]] = []
    scores = out.scores.tolist()
    flags = out.is_anomaly.tolist()
    confidence = out.confidence.tolist()
    for i in range(out.rows):
        if not out.is_scored(i):
            assert out.calibration_seen is not None and out.calibration_required is not None
            what = "detector" if out.device_detector else "baseline"
            seen, required = int(out.calibration_seen[i]), out.calibration_required
            results.append(_calibrating(seen, required, what))
            continue
        text, deviations = _explain(mv, out, i, z[i] if z is not None else None, flags[i])
        row: dict[str, Any] = {} if out.scored is None else {"status": "scored"}
        row.update(
            {
                "is_anomaly": flags[i],
                "anomaly_score": scores[i],
                "threshold": out.threshold,
                "confidence": confidence[i],
                "explanation": text,
                "deviations": deviations,
            }
        )
        results.append(row)
    return results
