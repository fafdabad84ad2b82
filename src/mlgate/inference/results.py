"""Turning raw model outputs into result objects and batch summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgate.registry.registry import ModelVersion

#: Deviation (in training standard deviations) from which a reading counts as unusual.
DEVIATION_Z = 2.0
EXPLAIN_TOP = 3


def classification_results(mv: ModelVersion, probabilities: np.ndarray) -> list[dict[str, Any]]:
    """One result per row: class, name, confidence, probabilities by name, is_attack."""
    classes = mv.manifest.classes
    winners = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(winners)), winners]
    attack = mv.attack_mask[winners] if mv.attack_mask is not None else np.zeros(len(winners), bool)
    rows = probabilities.tolist()
    return [
        {
            "predicted_class": k,
            "predicted_class_name": classes[k],
            "confidence": c,
            "probabilities": dict(zip(classes, row, strict=True)),
            "is_attack": a,
        }
        for k, c, row, a in zip(
            winners.tolist(), confidence.tolist(), rows, attack.tolist(), strict=True
        )
    ]


def _deviations(
    center: np.ndarray | None, spread: np.ndarray | None, x: np.ndarray
) -> np.ndarray | None:
    if center is None or spread is None:
        return None
    std = np.where(spread > 0, spread, 1.0)
    return (x - center) / std


def _explain(
    mv: ModelVersion,
    row: np.ndarray,
    z: np.ndarray | None,
    is_anomaly: bool,
    center: np.ndarray | None,
    normal: str = "normal",
) -> tuple[str, list[dict[str, Any]]]:
    if z is None:
        text = "anomaly score above the threshold" if is_anomaly else "within normal parameters"
        return text, []
    order = np.argsort(-np.abs(z))[:EXPLAIN_TOP]
    names = mv.manifest.feature_names
    assert center is not None
    deviations = [
        {
            "feature": names[j],
            "value": float(row[j]),
            "expected": float(center[j]),
            "z_score": round(float(z[j]), 2),
        }
        for j in order
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
    if is_anomaly:
        top = deviations[0]
        return (
            "Unusual combination of readings, no single sensor far from normal "
            f"(largest: {top['feature']} {abs(top['z_score']):.1f}σ "
            f"{'above' if top['z_score'] > 0 else 'below'})",
            deviations,
        )
    return "Operating within normal parameters", deviations


def anomaly_results(
    mv: ModelVersion,
    scores: np.ndarray,
    x: np.ndarray,
    *,
    threshold: float | None = None,
    score_scale: float | None = None,
    baseline: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One result per row: verdict, score, confidence and a readable explanation.

    ``threshold``/``score_scale`` replace the manifest's; ``baseline`` (mean, std) is the
    device's, which explanations are then relative to (else the training reference).
    """
    if threshold is None:
        threshold = float(mv.manifest.threshold or 0.0)
    scale = float(score_scale or mv.manifest.score_scale or 1.0)
    flags = scores >= threshold
    # Confidence in the verdict: 0.5 at the threshold, towards 1 far from it.
    confidence = 1.0 / (1.0 + np.exp(-np.abs(scores - threshold) / scale))
    center, spread = baseline if baseline is not None else (mv.reference_mean, mv.reference_std)
    normal = "the device's baseline" if baseline is not None else "normal"
    z = _deviations(center, spread, x)
    results = []
    for i, (score, flag, conf) in enumerate(
        zip(scores.tolist(), flags.tolist(), confidence.tolist(), strict=True)
    ):
        text, deviations = _explain(mv, x[i], z[i] if z is not None else None, flag, center, normal)
        results.append(
            {
                "is_anomaly": flag,
                "anomaly_score": score,
                "threshold": threshold,
                "confidence": conf,
                "explanation": text,
                "deviations": deviations,
            }
        )
    return results


def summarize(mv: ModelVersion, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch summary: counts per class and attack rate, or anomaly count and rate."""
    total = len(results)
    if mv.manifest.task == "classification":
        counts = dict.fromkeys(mv.manifest.classes, 0)
        attacks = 0
        for r in results:
            counts[r["predicted_class_name"]] += 1
            attacks += r["is_attack"]
        return {
            "total": total,
            "class_counts": counts,
            "attacks": attacks,
            "attack_rate": attacks / total if total else 0.0,
        }
    anomalies = sum(1 for r in results if r["is_anomaly"])
    out = {
        "total": total,
        "anomalies": anomalies,
        "anomaly_rate": anomalies / total if total else 0.0,
    }
    if results and "status" in results[0]:
        out["calibrating"] = sum(1 for r in results if r["status"] == "calibrating")
    return out


def calibrating_result(seen: int, required: int) -> dict[str, Any]:
    """The result of a reading that went into its device's baseline (no verdict yet)."""
    return {
        "status": "calibrating",
        "calibration": {"seen": seen, "required": required},
        "is_anomaly": None,
        "anomaly_score": None,
        "threshold": None,
        "confidence": None,
        "explanation": f"Calibrating the device baseline ({seen} of {required} readings)",
        "deviations": [],
    }
