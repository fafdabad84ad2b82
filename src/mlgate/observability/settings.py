"""Metrics configuration (``MLGATE_METRICS__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """Prometheus metrics at ``/metrics``."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = True
    """Serve `/metrics` and count (False: no metrics at all)."""
    path: str = Field(default="/metrics", pattern=r"^/[A-Za-z0-9._/-]*$")
    """Where the metrics are served."""
    public: bool = False
    """Serve the metrics without authentication (only where the port is not reachable
    from outside); otherwise the caller needs the `metrics:read` (or `admin`) scope."""
    refresh_interval_s: float = Field(default=30.0, ge=0, le=3600)
    """Database-backed gauges (drift scores, live accuracy, feedback counts) are
    recomputed at most this often, on a scrape (0: on every scrape)."""
    sample_interval_s: float = Field(default=5.0, gt=0, le=600)
    """With several workers, how often each worker publishes its own state (audit queue
    depth and drops, principal-cache hits); a scrape is exact for the worker it reaches."""
