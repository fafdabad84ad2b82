"""Evaluating a running server's models through its HTTP API."""

from __future__ import annotations

from mlgate.evaluation.iot import (
    DEFAULT_MODELS,
    EvaluationError,
    ModelScore,
    SkabRun,
    evaluate_iot,
    leaderboard_rows,
    load_runs,
)

__all__ = [
    "DEFAULT_MODELS",
    "EvaluationError",
    "ModelScore",
    "SkabRun",
    "evaluate_iot",
    "leaderboard_rows",
    "load_runs",
]
