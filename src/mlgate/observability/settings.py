"""Metrics and tracing configuration (``MLGATE_METRICS__*``, ``MLGATE_TRACING__*``)."""

from __future__ import annotations

from typing import Literal

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
    port: int | None = Field(default=None, ge=1, le=65535)
    """Also serve the metrics, without authentication, on this port of the `mlgate serve`
    process (every worker's counts; the gauges read from the database and the registry -
    drift, accuracy, feedback, load times - only on the main port's `/metrics`)."""
    port_host: str = "127.0.0.1"
    """The interface of that port (`0.0.0.0` in a container scraped from outside)."""
    refresh_interval_s: float = Field(default=30.0, ge=0, le=3600)
    """Database-backed gauges (drift scores, live accuracy, feedback counts) are
    recomputed at most this often, on a scrape (0: on every scrape)."""
    sample_interval_s: float = Field(default=5.0, gt=0, le=600)
    """With several workers, how often each worker publishes its own state (audit queue
    depth and drops, principal-cache hits); a scrape is exact for the worker it reaches."""


class TracingSettings(BaseModel):
    """OpenTelemetry traces (install the `tracing` extra); off unless enabled."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = False
    """Trace requests: a span per request (honouring an incoming `traceparent`) and per
    step (authentication, rate limit, decode, cache, batch queue, inference, encode,
    audit enqueue and flush)."""
    exporter: Literal["otlp", "console", "none"] = "otlp"
    """Where spans go: OTLP over HTTP, the console (debugging), or nowhere."""
    endpoint: str = Field(default="http://127.0.0.1:4318/v1/traces", pattern=r"^https?://")
    """The OTLP/HTTP traces endpoint (an OpenTelemetry Collector, Jaeger, Tempo...)."""
    service_name: str = Field(default="mlgate", min_length=1, max_length=200)
    """The `service.name` resource attribute of every span."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded; a request with a `traceparent` follows its caller's
    sampling decision."""
