"""Streaming SKAB runs through a running server's HTTP API, one device per run.

Every labelled CSV under the data directory is one run. For every model, each run is
sent as a fresh device (``eval-<token>-<model>-<n>``) in batches of consecutive
readings, in order: the server calibrates the device's baseline on its first readings
(``"status": "calibrating"``) and scores the rest, which are compared with the labels.
With ``baseline_readings`` set, the baseline is instead uploaded from the run's first
that many readings (an admin key is needed) and only later readings count.

The result is a leaderboard-style row per model: F1, FAR (false alarm rate), MAR
(missed alarm rate), precision, recall and the rows scored.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlgate.training.common import binary_metrics
from mlgate.training.iot import ALL_COLUMNS, ALL_FEATURES, load_skab_file

DEFAULT_MODELS = ("iot-isolation-forest", "iot-lof", "iot-autoencoder", "iot-device-distance")
DEFAULT_BATCH = 200
#: All eight sensors are sent; models that use fewer ignore the others.
FEATURE_NAMES = tuple(f[0] for f in ALL_FEATURES)


class EvaluationError(RuntimeError):
    """The data or the server did not allow the evaluation (the message says why)."""


@dataclass(frozen=True)
class SkabRun:
    """One labelled run: the eight sensors (in :data:`FEATURE_NAMES` order), 0/1 labels."""

    name: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class ModelScore:
    """What one model did on all runs."""

    model: str
    runs: int = 0
    calibrating: int = 0
    labels: list[np.ndarray] = field(default_factory=list)
    alarms: list[np.ndarray] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        if not self.labels:
            return binary_metrics(np.zeros(0), np.zeros(0))
        return binary_metrics(np.concatenate(self.labels), np.concatenate(self.alarms))


def load_runs(data_dir: Path) -> tuple[list[SkabRun], list[str]]:
    """Every labelled SKAB CSV under ``data_dir`` (recursively, in path order), and the
    names of the files skipped because they have no ``anomaly`` column."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EvaluationError(f"{data_dir} is not a directory")
    runs: list[SkabRun] = []
    skipped: list[str] = []
    for path in sorted(data_dir.rglob("*.csv"), key=lambda p: _path_key(p, data_dir)):
        name = path.relative_to(data_dir).as_posix()
        with path.open("r", encoding="utf-8") as fh:
            header = fh.readline()
        if "anomaly" not in header.split(";"):
            skipped.append(name)
            continue
        run = load_skab_file(path, name, labelled=True, columns=ALL_COLUMNS)
        assert run.y is not None
        runs.append(SkabRun(name, run.x, run.y))
    if not runs:
        raise EvaluationError(f"{data_dir} has no labelled SKAB CSV files (';'-separated)")
    return runs, skipped


def _path_key(path: Path, root: Path) -> tuple[Any, ...]:
    parts = path.relative_to(root).with_suffix("").parts
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _error(response: httpx.Response, what: str) -> EvaluationError:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    return EvaluationError(f"{what}: HTTP {response.status_code}: {message}")


async def stream_run(
    client: httpx.AsyncClient,
    model: str,
    device_id: str,
    run: SkabRun,
    *,
    batch_size: int = DEFAULT_BATCH,
    baseline_readings: int | None = None,
    version: str | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Send one run as one device; (labels, alarms) of the scored rows, calibrating rows.

    ``version`` (a version or alias) is sent with every batch; None lets the server
    answer with the model's default (``stable``)."""
    rows = [dict(zip(FEATURE_NAMES, map(float, r), strict=True)) for r in run.x]
    url = f"/v1/models/{model}"
    first = 0
    if baseline_readings is not None:
        response = await client.put(
            f"{url}/devices/{device_id}/baseline", json={"readings": rows[:baseline_readings]}
        )
        if response.status_code != 200:
            raise _error(response, f"uploading the baseline of {run.name} for {model}")
        first = baseline_readings
    labels: list[int] = []
    alarms: list[bool] = []
    calibrating = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        body: dict[str, Any] = {"instances": chunk, "device_id": device_id}
        if version is not None:
            body["version"] = version
        response = await client.post(f"{url}/predict/batch", json=body)
        if response.status_code != 200:
            raise _error(response, f"scoring {run.name} with {model}")
        for i, p in enumerate(response.json()["predictions"]):
            if p.get("status") == "calibrating":
                calibrating += 1
            elif start + i >= first:
                labels.append(int(run.y[start + i]))
                alarms.append(bool(p["is_anomaly"]))
        if advance is not None:
            advance(len(chunk))
    return np.asarray(labels, dtype=np.int64), np.asarray(alarms, dtype=bool), calibrating


async def evaluate_iot(
    client: httpx.AsyncClient,
    runs: Sequence[SkabRun],
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    batch_size: int = DEFAULT_BATCH,
    baseline_readings: int | None = None,
    concurrency: int = 4,
    version: str | None = None,
    advance: Callable[[str, int], None] | None = None,
) -> list[ModelScore]:
    """Stream every run through every model (fresh device ids); one score per model.

    ``advance(model, rows)`` is called after every batch (progress displays).
    """
    token = secrets.token_hex(4)
    limit = asyncio.Semaphore(max(1, concurrency))
    scores = [ModelScore(m) for m in models]

    async def one(score: ModelScore, n: int, run: SkabRun) -> None:
        def step(rows: int) -> None:
            if advance is not None:
                advance(score.model, rows)

        async with limit:
            labels, alarms, calibrating = await stream_run(
                client,
                score.model,
                f"eval-{token}-{score.model}-{n}",
                run,
                batch_size=batch_size,
                baseline_readings=baseline_readings,
                version=version,
                advance=step,
            )
        score.labels.append(labels)
        score.alarms.append(alarms)
        score.calibrating += calibrating
        score.runs += 1

    for score in scores:
        # Runs of one model in parallel; results keep no order dependence (pooled counts).
        await asyncio.gather(*(one(score, n, run) for n, run in enumerate(runs)))
    return scores


def leaderboard_rows(scores: Sequence[ModelScore]) -> list[dict[str, Any]]:
    """One plain row per model: F1, FAR, MAR, precision, recall, rows scored."""
    rows = []
    for s in scores:
        m = s.metrics()
        rows.append(
            {
                "model": s.model,
                "f1": m["f1"],
                "far": m["false_alarm_rate"],
                "mar": m["missed_alarm_rate"],
                "precision": m["precision"],
                "recall": m["recall"],
                "rows_scored": m["rows"],
                "calibrating_rows": s.calibrating,
                "runs": s.runs,
            }
        )
    return rows
