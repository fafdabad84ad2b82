"""Input drift configuration (``MLGATE_DRIFT__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DriftSettings(BaseModel):
    """Per-window histograms of the inputs on the reference bins, and the thresholds
    that flag a feature as drifted."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = True
    """Count every answered request's inputs and predicted classes into the histograms."""
    bucket_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    """Width of one stored histogram window (a report sums the windows it covers)."""
    flush_interval_s: float = Field(default=5.0, gt=0, le=3600)
    """How often a worker adds its counts to the database (binning what is pending first)."""
    bin_rows: int = Field(default=20_000, ge=1)
    """Pending rows from which a worker bins them at once, without waiting for the flush
    (keeps the inputs it holds small under batch traffic)."""
    max_pending_rows: int = Field(default=200_000, ge=1)
    """Rows a worker holds unbinned at most; more are dropped and counted."""
    default_window_s: int = Field(default=24 * 3600, ge=60)
    """The window a drift report covers when the request names none."""
    js_threshold: float = Field(default=0.1, gt=0, le=1)
    """A feature whose Jensen-Shannon distance (base 2) to the reference exceeds this is flagged."""
    psi_threshold: float = Field(default=0.2, gt=0)
    """A feature whose population stability index exceeds this is flagged."""
    min_rows: int = Field(default=100, ge=1)
    """Fewer rows in the window than this: values are reported but nothing is flagged."""
    retention_days: int = Field(default=30, ge=1, le=3650)
    """Histogram windows older than this are deleted."""
