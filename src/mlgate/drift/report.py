"""The drift report of one model version over a recent window."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlgate.drift.reference import (
    PREDICTIONS,
    prediction_labels,
    reference_bins,
    training_mix,
)
from mlgate.drift.settings import DriftSettings
from mlgate.drift.stats import EPSILON, js_distance, psi, shares
from mlgate.drift.store import DriftStore
from mlgate.errors import ValidationFailed
from mlgate.registry.registry import ModelVersion

_DURATION = re.compile(r"^(\d{1,7})([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 366 * 86400


def parse_window(text: str | None, default_s: int) -> int:
    """``"3600"``, ``"90m"``, ``"24h"`` or ``"7d"`` in seconds (422 otherwise)."""
    if text is None:
        return default_s
    match = _DURATION.match(text.strip())
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise ValidationFailed(
            f"window must be a duration such as 3600, 90m, 24h or 7d (at most 366d), got {text!r}",
            details=[{"field": "window", "message": "invalid duration"}],
        )
    return seconds


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _round(value: float) -> float:
    return round(value, 6)


async def drift_report(
    mv: ModelVersion, store: DriftStore, settings: DriftSettings, window_s: int, now: float
) -> dict[str, Any]:
    """Per feature JS distance and PSI against the reference bins, drifted features,
    and the predicted-class mix against the training mix."""
    bucket = settings.bucket_s
    # Every stored window that overlaps [now - window_s, now].
    since = int((now - window_s) // bucket) * bucket
    counts, windows = await store.totals(mv.name, mv.version, since)
    manifest = mv.manifest
    labels = prediction_labels(manifest)
    predicted = np.array([counts.get(PREDICTIONS, {}).get(i, 0) for i in range(len(labels))])
    rows = int(predicted.sum())
    enough = rows >= settings.min_rows
    bins = reference_bins(manifest)
    features: list[dict[str, Any]] = []
    if bins is not None:
        for f, name in enumerate(bins.features):
            stored = counts.get(name, {})
            live_counts = np.array([stored.get(b, 0) for b in range(bins.n_bins)])
            seen = int(live_counts.sum())
            expected = bins.expected[f]
            live = shares(live_counts)
            js = js_distance(live, expected) if seen else None
            stability = psi(live, expected) if seen else None
            drifted = bool(
                enough
                and seen >= settings.min_rows
                and js is not None
                and stability is not None
                and (js > settings.js_threshold or stability > settings.psi_threshold)
            )
            features.append(
                {
                    "feature": name,
                    "rows": seen,
                    "js_distance": None if js is None else _round(js),
                    "psi": None if stability is None else _round(stability),
                    "drifted": drifted,
                    "edges": [float(e) for e in bins.edges[f]],
                    "reference_shares": [_round(float(v)) for v in expected],
                    "live_shares": [_round(float(v)) for v in live],
                }
            )
    mix = training_mix(manifest)
    live_mix = shares(predicted)
    prediction_view: dict[str, Any] = {
        "labels": labels,
        "counts": dict(zip(labels, predicted.tolist(), strict=True)),
        "live_shares": dict(zip(labels, [_round(float(v)) for v in live_mix], strict=True)),
        "training_shares": None,
        "training_source": None,
        "js_distance": None,
        "psi": None,
        "drifted": False,
    }
    if mix is not None:
        expected_mix, source = mix
        prediction_view["training_shares"] = dict(
            zip(labels, [_round(float(v)) for v in expected_mix], strict=True)
        )
        prediction_view["training_source"] = source
        if rows:
            js = js_distance(live_mix, expected_mix)
            stability = psi(live_mix, expected_mix)
            prediction_view["js_distance"] = _round(js)
            prediction_view["psi"] = _round(stability)
            prediction_view["drifted"] = bool(
                enough and (js > settings.js_threshold or stability > settings.psi_threshold)
            )
    return {
        "model": mv.name,
        "version": mv.version,
        "window": {
            "seconds": window_s,
            "from": _iso(since),
            "to": _iso(now),
            "bucket_seconds": bucket,
            "buckets": len(windows),
        },
        "rows": rows,
        "method": {
            "reference": (
                "manifest reference quantiles " + ", ".join(bins.quantiles)
                if bins is not None
                else None
            ),
            "bins": bins.n_bins if bins is not None else 0,
            "js_distance": "sqrt(JSD), base 2, on the reference bins",
            "psi": "sum((a - e) * ln(a / e)), shares floored at epsilon",
            "epsilon": EPSILON,
        },
        "thresholds": {
            "js_distance": settings.js_threshold,
            "psi": settings.psi_threshold,
            "min_rows": settings.min_rows,
        },
        "enough_rows": enough,
        "drifted_features": [f["feature"] for f in features if f["drifted"]],
        "features": features,
        "predictions": prediction_view,
    }
