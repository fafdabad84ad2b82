"""Scoring a table chunk by chunk: read, match columns, score, write, summarise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.client import InputError
from mlgate.client._frames import feature_columns, result_columns
from mlgate.scoring.scorers import Schema, Scorer, ScoringError
from mlgate.scoring.tables import CellError, Chunk, TableReader, TableWriter, feature_matrix


class FileScoringError(Exception):
    """What stopped the scoring, naming the file, and the line or row and column."""


@dataclass
class Summary:
    """Counts over every scored row."""

    model: str
    version: str
    task: str
    classes: list[str]
    rows: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    attacks: int = 0
    anomalies: int = 0
    calibrating: int = 0
    seconds: float = 0.0

    def add(self, results: dict[str, np.ndarray]) -> None:
        n = len(next(iter(results.values())))
        self.rows += n
        if "predicted_class_name" in results:
            names, counts = np.unique(
                results["predicted_class_name"].astype(str), return_counts=True
            )
            for name, count in zip(names.tolist(), counts.tolist(), strict=True):
                self.class_counts[name] = self.class_counts.get(name, 0) + int(count)
            self.attacks += int(np.count_nonzero(results["is_attack"]))
        else:
            self.anomalies += int(np.count_nonzero(results["is_anomaly"]))
            if "calibrating" in results:
                self.calibrating += int(np.count_nonzero(results["calibrating"]))

    def view(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        rate = self.rows / self.seconds if self.seconds > 0 else None
        view: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(rate, 1) if rate is not None else None,
        }
        if self.task == "classification":
            view["class_counts"] = {c: self.class_counts.get(c, 0) for c in self.classes}
            view["attacks"] = self.attacks
            view["attack_rate"] = self.attacks / self.rows if self.rows else 0.0
        else:
            scored = self.rows - self.calibrating
            view["anomalies"] = self.anomalies
            view["anomaly_rate"] = self.anomalies / scored if scored else 0.0
            if self.calibrating:
                view["calibrating"] = self.calibrating
        return view


def _by_device(devices: list[str]) -> dict[str, np.ndarray]:
    """Row indices of each device, in order of first appearance (rows in file order)."""
    groups: dict[str, list[int]] = {}
    for i, device in enumerate(devices):
        groups.setdefault(device, []).append(i)
    return {d: np.asarray(rows, dtype=np.int64) for d, rows in groups.items()}


def _scatter(parts: list[tuple[np.ndarray, dict[str, np.ndarray]]], n: int) -> dict[str, Any]:
    """Per-device outputs put back in row order."""
    merged: dict[str, np.ndarray] = {}
    for rows, outputs in parts:
        for name, array in outputs.items():
            if name not in merged:
                merged[name] = np.empty((n, *array.shape[1:]), dtype=array.dtype)
            merged[name][rows] = array
    return merged


class FileScorer:
    """Scores a table with one scorer and writes the scored rows."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        source: Path,
        device_column: str | None = None,
        results_only: bool = False,
    ) -> None:
        self.scorer = scorer
        self.source = source
        self.device_column = device_column
        self.results_only = results_only

    def columns_for(self, header: list[str]) -> list[str]:
        """The input column of each feature (error naming every missing one)."""
        schema: Schema = self.scorer.schema
        try:
            chosen = feature_columns(header, schema.features)
        except InputError as exc:
            raise FileScoringError(f"{self.source}: {exc.message}") from None
        if self.device_column is not None and self.device_column not in header:
            raise FileScoringError(
                f"{self.source}: no column {self.device_column!r} (--device-column); "
                f"the columns are {', '.join(header[:20])}{' …' if len(header) > 20 else ''}"
            )
        return [str(c) for c in chosen]

    def run(
        self,
        reader: TableReader,
        writer: TableWriter | None,
        *,
        chunk_rows: int,
        advance: Callable[[int], None] = lambda rows: None,
    ) -> Summary:
        schema = self.scorer.schema
        summary = Summary(schema.model, schema.version, schema.task, schema.classes)
        columns = self.columns_for(reader.header)
        started = time.perf_counter()
        for chunk in reader.chunks(chunk_rows):
            results = self._score(chunk, columns)
            if writer is not None:
                inputs = {} if self.results_only else chunk.columns
                writer.write(inputs, results, chunk.size)
            summary.add(results)
            summary.seconds = time.perf_counter() - started
            advance(chunk.size)
        summary.seconds = time.perf_counter() - started
        return summary

    def _score(self, chunk: Chunk, columns: list[str]) -> dict[str, Any]:
        try:
            matrix = feature_matrix(chunk, columns)
        except CellError as exc:
            raise FileScoringError(f"{self.source}, {chunk.where(exc.row)}: {exc}") from None
        if self.device_column is None:
            outputs = self._checked(chunk, matrix, None, np.arange(chunk.size))
        else:
            devices = chunk.text_column(self.device_column)
            parts = [
                (rows, self._checked(chunk, matrix[rows], device, rows))
                for device, rows in _by_device(devices).items()
            ]
            outputs = _scatter(parts, chunk.size)
        results = result_columns(outputs, self.scorer.schema.classes)
        if "prediction_id" in outputs:
            results["prediction_id"] = outputs["prediction_id"]
        return results

    def _checked(
        self, chunk: Chunk, matrix: np.ndarray, device: str | None, rows: np.ndarray
    ) -> dict[str, np.ndarray]:
        try:
            return self.scorer.score(matrix, device)
        except ScoringError as exc:
            where = f", {chunk.where(int(rows[exc.row]))}" if exc.row is not None else ""
            raise FileScoringError(f"{self.source}{where}: {exc.message}") from None
