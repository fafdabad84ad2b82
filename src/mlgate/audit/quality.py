"""Live quality of a model from its labelled predictions, per version.

- Classifiers: ``labelled``, ``accuracy``, ``macro_f1`` (over the classes present in the
  labels, as the training reports compute it), per-class precision / recall / F1 /
  support and the confusion matrix (rows: true class, columns: predicted class).
- Anomaly models: the SKAB measures - F1, precision, recall, false-alarm rate
  FP / (FP + TN) and missed-alarm rate FN / (FN + TP) - and the counts. Readings that got
  no verdict (a device still calibrating) are counted as ``unscored`` and left out.
- **Estimated accuracy without labels** (classifiers whose manifest declares calibrated
  probabilities, ``metrics.calibration``): with calibrated probabilities the chance that
  a prediction is right is its confidence, so the expected accuracy over a window is the
  mean confidence of the predicted class over *all* its predictions (the idea of NannyML's
  CBPE, for accuracy). Shown beside the measured accuracy, each with the number of
  predictions it rests on.
- Served and shadow records of the same labelled predictions side by side, when a
  shadow version also scored them: a challenger is compared on exactly the rows the
  champion answered.

The database does the counting (GROUP BY); the metrics are computed from the counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from mlgate.audit.catalog import VersionCatalog, VersionFacts
from mlgate.db.models import PredictionFeedback, PredictionRecord

P = PredictionRecord
F = PredictionFeedback

ESTIMATE_METHOD = (
    "mean probability of the predicted class over every prediction in the window "
    "(CBPE: expected accuracy of calibrated probabilities)"
)


def _r(value: float) -> float:
    return round(float(value), 6)


# -- metrics from counts ---------------------------------------------------------------------


def classification_quality(
    pairs: dict[tuple[str, str], int], classes: Iterable[str]
) -> dict[str, Any]:
    """Metrics from counts of (true class, predicted class)."""
    labels = list(classes)
    for true, predicted in sorted(pairs):
        for name in (true, predicted):
            if name not in labels:
                labels.append(name)
    index = {name: i for i, name in enumerate(labels)}
    k = len(labels)
    matrix = [[0] * k for _ in range(k)]
    for (true, predicted), count in pairs.items():
        matrix[index[true]][index[predicted]] += count
    total = sum(pairs.values())
    correct = sum(matrix[i][i] for i in range(k))
    per_class: dict[str, dict[str, Any]] = {}
    f1s_present: list[float] = []
    for i, name in enumerate(labels):
        support = sum(matrix[i])
        called = sum(matrix[r][i] for r in range(k))
        tp = matrix[i][i]
        precision = tp / called if called else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": _r(precision),
            "recall": _r(recall),
            "f1": _r(f1),
            "support": support,
        }
        if support:
            f1s_present.append(f1)
    return {
        "labelled": total,
        "accuracy": _r(correct / total) if total else None,
        "macro_f1": _r(sum(f1s_present) / len(f1s_present)) if f1s_present else None,
        "per_class": per_class,
        "confusion_matrix": {
            "labels": labels,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": matrix,
        },
    }


def anomaly_quality(pairs: dict[tuple[bool, bool | None], int]) -> dict[str, Any]:
    """Metrics from counts of (true verdict, predicted verdict; None: not scored)."""
    tp = pairs.get((True, True), 0)
    fp = pairs.get((False, True), 0)
    tn = pairs.get((False, False), 0)
    fn = pairs.get((True, False), 0)
    unscored = sum(count for (_, predicted), count in pairs.items() if predicted is None)
    scored = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "labelled": scored + unscored,
        "unscored": unscored,
        "accuracy": _r((tp + tn) / scored) if scored else None,
        "f1": _r(f1) if scored else None,
        "precision": _r(precision) if scored else None,
        "recall": _r(recall) if scored else None,
        "false_alarm_rate": _r(fp / (fp + tn)) if fp + tn else None,
        "missed_alarm_rate": _r(fn / (fn + tp)) if fn + tp else None,
        "counts": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


# -- queries -------------------------------------------------------------------------------


def _window(model: str, since_key: str | None, version: str | None, table: Any = P) -> list[Any]:
    conditions = [table.model == model]
    if since_key is not None:
        conditions.append(table.request_key >= since_key)
    if version is not None:
        conditions.append(table.version == version)
    return conditions


async def model_quality(
    engine: AsyncEngine,
    catalog: VersionCatalog,
    model: str,
    *,
    task: str,
    version: str | None,
    since_key: str | None,
) -> dict[str, Any]:
    """Per-version quality (served and shadow records) and served-vs-shadow comparisons."""
    joined = and_(F.request_key == P.request_key, F.row_index == P.row_index)
    volume = (
        select(P.version, P.shadow, func.count(), func.avg(P.confidence))
        .where(*_window(model, since_key, version))
        .group_by(P.version, P.shadow)
    )
    labelled = (
        select(P.version, P.shadow, F.label, P.predicted, F.is_anomaly, P.is_anomaly, func.count())
        .join(F, joined)
        .where(*_window(model, since_key, version))
        .group_by(P.version, P.shadow, F.label, P.predicted, F.is_anomaly, P.is_anomaly)
    )
    served, shadow = aliased(P), aliased(P)
    pairs = (
        select(
            served.version,
            shadow.version,
            F.label,
            served.predicted,
            shadow.predicted,
            F.is_anomaly,
            served.is_anomaly,
            shadow.is_anomaly,
            func.count(),
        )
        .select_from(served)
        .join(
            shadow,
            and_(
                shadow.request_key == served.request_key,
                shadow.row_index == served.row_index,
                shadow.shadow.is_(True),
            ),
        )
        .join(F, and_(F.request_key == served.request_key, F.row_index == served.row_index))
        .where(served.shadow.is_(False), *_window(model, since_key, None, served))
        .group_by(
            served.version,
            shadow.version,
            F.label,
            served.predicted,
            shadow.predicted,
            F.is_anomaly,
            served.is_anomaly,
            shadow.is_anomaly,
        )
    )
    async with engine.connect() as conn:
        volumes = (await conn.execute(volume)).all()
        counts = (await conn.execute(labelled)).all()
        compared = (await conn.execute(pairs)).all()

    is_classifier = task == "classification"
    per_version: dict[tuple[str, bool], dict[Any, int]] = defaultdict(dict)
    for v, is_shadow, true_label, predicted, true_verdict, verdict, n in counts:
        key = (true_label, predicted) if is_classifier else (bool(true_verdict), verdict)
        if is_classifier and (true_label is None or predicted is None):
            continue
        if not is_classifier and true_verdict is None:
            continue
        bucket = per_version[(v, bool(is_shadow))]
        bucket[key] = bucket.get(key, 0) + n

    versions = []
    for v, is_shadow, n, mean_confidence in sorted(volumes, key=lambda r: (r[1], r[0])):
        facts = catalog.facts(model, v)
        entry: dict[str, Any] = {"version": v, "shadow": bool(is_shadow), "predictions": n}
        bucket = per_version.get((v, bool(is_shadow)), {})
        if is_classifier:
            entry.update(classification_quality(bucket, facts.classes if facts else ()))
            entry["estimated"] = _estimate(facts, n, mean_confidence)
        else:
            entry.update(anomaly_quality(bucket))
        versions.append(entry)

    comparisons = _comparisons(compared, catalog, model, version, is_classifier)
    return {"versions": versions, "shadow_comparisons": comparisons}


def _estimate(facts: VersionFacts | None, n: int, mean_confidence: Any) -> dict[str, Any]:
    if facts is None or facts.calibration is None or mean_confidence is None:
        return {
            "accuracy": None,
            "predictions": n,
            "note": "this version declares no calibrated probabilities (manifest "
            "metrics.calibration): its confidence is not an estimate of accuracy",
        }
    return {
        "accuracy": _r(mean_confidence),
        "predictions": n,
        "method": ESTIMATE_METHOD,
        "calibration": facts.calibration,
    }


def _comparisons(
    rows: Iterable[Any],
    catalog: VersionCatalog,
    model: str,
    version: str | None,
    is_classifier: bool,
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], tuple[dict[Any, int], dict[Any, int]]] = {}
    for row in rows:
        served_v, shadow_v, true_label, served_p, shadow_p = row[:5]
        true_verdict, served_a, shadow_a, n = row[5:]
        if version is not None and version not in (served_v, shadow_v):
            continue
        if is_classifier:
            if true_label is None or served_p is None or shadow_p is None:
                continue
            keys = ((true_label, served_p), (true_label, shadow_p))
        else:
            if true_verdict is None:
                continue
            keys = ((bool(true_verdict), served_a), (bool(true_verdict), shadow_a))
        served_counts, shadow_counts = groups.setdefault((served_v, shadow_v), ({}, {}))
        served_counts[keys[0]] = served_counts.get(keys[0], 0) + n
        shadow_counts[keys[1]] = shadow_counts.get(keys[1], 0) + n
    out = []
    for (served_v, shadow_v), (served_counts, shadow_counts) in sorted(groups.items()):
        if is_classifier:
            served_q = classification_quality(served_counts, _classes(catalog, model, served_v))
            shadow_q = classification_quality(shadow_counts, _classes(catalog, model, shadow_v))
        else:
            served_q, shadow_q = anomaly_quality(served_counts), anomaly_quality(shadow_counts)
        out.append(
            {
                "served_version": served_v,
                "shadow_version": shadow_v,
                "labelled": sum(served_counts.values()),
                "served": served_q,
                "shadow": shadow_q,
            }
        )
    return out


def _classes(catalog: VersionCatalog, model: str, version: str) -> tuple[str, ...]:
    facts = catalog.facts(model, version)
    return facts.classes if facts is not None else ()
