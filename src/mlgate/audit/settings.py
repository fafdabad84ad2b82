"""Configuration of the prediction audit log, feedback, retention and usage counters."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AuditSettings(BaseModel):
    """The prediction audit log (`/v1/predictions`), feedback, retention and usage."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = True
    """Record every prediction row (off: no audit log, predictions API or quality; usage
    is still counted)."""
    queue_max_records: int = Field(default=20_000, ge=1, le=100_000_000)
    """Prediction rows a worker holds in memory while they wait to be written; a request
    whose rows do not fit is not recorded (counted as overflow and logged). Each queued
    request keeps its input and output arrays, so this bounds the worker's memory: a
    worker that answers faster than its database takes rows fills it."""
    when_full: Literal["drop", "wait"] = "drop"
    """What a request whose rows do not fit in the queue does. `drop`: it is answered and
    not recorded (counted and logged). `wait`: its answer waits until the rows fit (at
    most `full_wait_s`, then 503 `audit_behind` with Retry-After), so that every
    answered row is recorded: throughput is then bounded by what the database writes."""
    full_wait_s: float = Field(default=5.0, gt=0, le=600)
    """Longest a request waits for room in the queue under `when_full: wait`."""
    batch_records: int = Field(default=2000, ge=1, le=100_000)
    """Most rows written by one flush (one multi-row INSERT, or COPY on PostgreSQL)."""
    flush_interval_s: float = Field(default=0.5, gt=0, le=3600)
    """Queued rows are written at least this often (sooner when a batch is full)."""
    retry_initial_s: float = Field(default=0.5, gt=0, le=3600)
    """First wait before writing again after the database refused a batch; doubles on
    each failure up to `retry_max_s`."""
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest wait between two attempts while the database is down."""
    write_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A batch write that takes longer is abandoned and retried (a hung database)."""
    shutdown_timeout_s: float = Field(default=10.0, ge=0, le=3600)
    """How long a graceful shutdown keeps trying to write what is still queued."""
    raw_input_models: list[str] = Field(default_factory=list)
    """Models whose raw input rows are stored with each record (feature values in the
    manifest's order); every other model stores only a hash of each row. `*`: all."""
    retention_days: float = Field(default=30.0, ge=0)
    """Records (and their feedback) older than this are deleted in the background;
    0 keeps them forever."""
    prune_interval_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    """How often the retention pruner runs."""
    prune_batch: int = Field(default=5000, ge=1, le=1_000_000)
    """Most rows one pruning DELETE removes (a large backlog is removed in many
    short transactions)."""
    max_page_size: int = Field(default=1000, ge=1, le=100_000)
    """Largest `limit` of `GET /v1/predictions`."""
    max_feedback_batch: int = Field(default=1000, ge=1, le=100_000)
    """Most labels one `POST /v1/feedback` may carry."""
    usage_flush_interval_s: float = Field(default=5.0, gt=0, le=3600)
    """How often a worker adds its usage counts to the database."""

    @model_validator(mode="after")
    def _retry_bounds(self) -> Self:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        return self

    def stores_raw_inputs(self, model: str) -> bool:
        """Whether records of ``model`` keep their raw input rows."""
        return model in self.raw_input_models or "*" in self.raw_input_models
