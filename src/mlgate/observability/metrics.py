"""The Prometheus metrics of one app, in a registry the app owns.

Never the global default registry: two apps in one process (the tests) each count their
own. Under ``mlgate serve --workers N`` the serve command points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory of its own (see
:mod:`mlgate.observability.multiprocess`); every worker then writes its counters to
memory-mapped files there and a scrape, whichever worker answers it, adds up every
worker's files (those of workers that exited included), so totals are exact.

The hooks below are what the request path calls: a dictionary lookup of a cached
labelled child and an increment, nothing else. Label values are bounded: route
templates (never raw paths), model names and versions the registry loaded, tiers,
status codes; never principals, keys or inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from mlgate.context import model_var
from mlgate.errors import MlgateError, Overloaded, PredictionTimeout, RateLimited
from mlgate.observability.multiprocess import MULTIPROC_ENV

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_QUEUE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to, when one is configured."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every ``mlgate_*`` metric of one app, and how to expose them."""

    def __init__(self, *, multiprocess: str | None = None) -> None:
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry()
        """What a scrape reads (the app's own: never the global default registry)."""
        # In multiprocess mode the values live in files read by MultiProcessCollector;
        # the metric objects themselves are registered nowhere (it would count twice).
        reg = None if multiprocess else self.registry
        self.http_requests = Counter(
            "mlgate_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "mlgate_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.http_in_flight = Gauge(
            "mlgate_http_requests_in_flight",
            "Requests being served now.",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.predictions = Counter(
            "mlgate_predictions",
            "Rows scored, by model, version, protocol and outcome (class name, or "
            "anomaly / normal / calibrating).",
            ["model", "version", "protocol", "outcome"],
            registry=reg,
        )
        self.inference_requests = Counter(
            "mlgate_inference_requests",
            "Inference requests answered, by model, version and protocol.",
            ["model", "version", "protocol"],
            registry=reg,
        )
        self.inference_duration = Histogram(
            "mlgate_inference_duration_seconds",
            "Time in the data plane per request (decode, cache, queue, model).",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "mlgate_queue_wait_seconds",
            "Time a request's rows waited in the adaptive batcher's queue.",
            ["model", "version"],
            buckets=_QUEUE_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            "mlgate_batch_rows",
            "Rows per model call made by the adaptive batcher.",
            ["model", "version"],
            buckets=_ROWS_BUCKETS,
            registry=reg,
        )
        self.cache_requests = Counter(
            "mlgate_cache_requests",
            "Prediction cache lookups, by model and result (hit, miss).",
            ["model", "result"],
            registry=reg,
        )
        self.rate_limit_refusals = Counter(
            "mlgate_rate_limit_refusals",
            "Requests refused by a rate limit, by tier and limit (requests, rows, login, ...).",
            ["tier", "limit"],
            registry=reg,
        )
        self.load_shed = Counter(
            "mlgate_load_shed",
            "Requests shed (503) because a model version's queue was full.",
            ["model"],
            registry=reg,
        )
        self.timeouts = Counter(
            "mlgate_timeouts",
            "Predictions that did not finish in time (504).",
            ["model"],
            registry=reg,
        )
        self.model_load_failures = Counter(
            "mlgate_model_load_failures",
            "Model versions that failed to load (per worker that tried).",
            ["model"],
            registry=reg,
        )
        self.audit_queue_depth = Gauge(
            "mlgate_audit_queue_depth",
            "Audit rows accepted and not written yet (every worker).",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.audit_flush = Histogram(
            "mlgate_audit_flush_seconds",
            "Time to write one batch of audit rows.",
            buckets=_FLUSH_BUCKETS,
            registry=reg,
        )
        self.audit_dropped = Counter(
            "mlgate_audit_dropped",
            "Audit rows not recorded because the queue was full.",
            registry=reg,
        )
        self.principal_cache = Counter(
            "mlgate_principal_cache_requests",
            "Credential lookups in the per-worker principal cache, by result (hit, miss).",
            ["result"],
            registry=reg,
        )
        if multiprocess:
            MultiProcessCollector(self.registry, path=multiprocess)
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}

    def add_collector(self, collector: Collector) -> None:
        """Values computed at scrape time (state gauges) join what is exposed."""
        self.registry.register(collector)

    # -- request path ----------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        if method not in _METHODS:
            method = "other"  # any token is a method: never a label (nor a cache key)
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (labels() takes a lock and builds a tuple)."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def batch_observer(self, model: str, version: str) -> Callable[[int, Iterable[float]], None]:
        """What the batcher of ``model``/``version`` reports each model call to."""
        rows = self.batch_rows.labels(model, version)
        wait = self.queue_wait.labels(model, version)

        def observe(n_rows: int, waits: Iterable[float]) -> None:
            rows.observe(n_rows)
            for seconds in waits:
                wait.observe(seconds)

        return observe

    def cache_lookup(self, model: str, hit: bool) -> None:
        self.child(self.cache_requests, model, "hit" if hit else "miss").inc()

    def refused(self, tier: str, limit: str) -> None:
        self.child(self.rate_limit_refusals, tier, limit).inc()

    def shed(self, model: str) -> None:
        self.child(self.load_shed, model).inc()

    def timed_out(self, model: str) -> None:
        self.child(self.timeouts, model).inc()

    def load_failed(self, model: str) -> None:
        self.child(self.model_load_failures, model).inc()

    def audit_flushed(self, seconds: float) -> None:
        self.audit_flush.observe(seconds)

    def error(self, exc: MlgateError) -> None:
        """Count the refusals that have a metric of their own (limits, shedding, timeouts)."""
        if isinstance(exc, RateLimited):
            details = exc.details if isinstance(exc.details, dict) else {}
            self.refused(str(details.get("tier", "none")), str(details.get("limit", "unknown")))
        elif isinstance(exc, Overloaded):
            details = exc.details if isinstance(exc.details, dict) else {}
            model = model_var.get() or details.get("model")
            if model:  # 503s of a model's queue (not those of the server's connections)
                self.shed(str(model))
        elif isinstance(exc, PredictionTimeout):
            self.timed_out(model_var.get() or "unknown")

    # -- registry listener -----------------------------------------------------------

    def on_load(self, mv: object) -> None:
        """Nothing: load times are read from the registry's snapshot when scraped."""

    def on_unload(self, mv: object) -> None:
        """Nothing: an unloaded version disappears from the snapshot."""

    def on_load_failure(self, model: str, version: str) -> None:
        self.load_failed(model)

    # -- exposition ------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when ``accept`` asks) and its
        content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
