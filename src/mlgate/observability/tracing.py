"""OpenTelemetry tracing, off unless configured (``MLGATE_TRACING__ENABLED=true``).

OpenTelemetry is an optional extra (``pip install mlgate[tracing]``): it is imported
only by :func:`build_tracing`, when tracing is turned on. The app owns its
``TracerProvider`` (never the process-global one). Components that open spans hold a
``tracer`` attribute that is None when tracing is off; :func:`step` then returns a
shared do-nothing context manager, so the cost of tracing off is one ``is None`` test
per step.

Each request gets a server span (a child of the incoming ``traceparent``, whose trace
id it keeps); each step of the request path a child span with the model and version as
attributes. The response carries the server span's ``traceparent``.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from mlgate.observability.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from starlette.types import Scope

log = logging.getLogger("mlgate.tracing")

MODEL = "mlgate.model"
VERSION = "mlgate.version"
ROWS = "mlgate.rows"


class _NoSpan(AbstractContextManager[None]):
    __slots__ = ()

    def __enter__(self) -> None:  # no span to hand out (the base returns self)
        return None

    def __exit__(self, *exc: object) -> None:
        return None


NO_SPAN = _NoSpan()
_TRACE_HEADERS = (b"traceparent", b"tracestate")


def step(
    tracer: Tracer | None, name: str, mv: Any = None, rows: int | None = None
) -> AbstractContextManager[Any]:
    """A child span of the current one for a step of the request path, with the model
    version (``mv``) and rows as attributes; nothing at all when tracing is off."""
    if tracer is None:
        return NO_SPAN
    attributes: dict[str, Any] = {}
    if mv is not None:
        attributes[MODEL] = mv.name
        attributes[VERSION] = mv.version
    if rows is not None:
        attributes[ROWS] = rows
    return tracer.start_as_current_span(name, attributes=attributes)


class Tracing:
    """The app's tracer provider, tracer and W3C trace-context propagator."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("mlgate")
        self.propagator = TraceContextTextMapPropagator()
        self._context = context
        self._trace = trace

    def start_request(self, scope: Scope) -> tuple[Span, object]:
        """The server span of an HTTP request (the child of its ``traceparent``, if any),
        made current; returns it and the token that :meth:`end_request` detaches."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        parent = self.propagator.extract(carrier) if carrier else None
        method = scope["method"]
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, token

    def end_request(self, span: Span, token: object, route: str, status: int) -> None:
        """Name the server span after its route template, record the status, end it."""
        span.update_name(f"{span.name} {route}")  # type: ignore[attr-defined]
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()
        self._context.detach(token)  # type: ignore[arg-type]

    def traceparent(self, span: Span) -> bytes:
        """The ``traceparent`` header value naming ``span`` (sent back to the client)."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, self._trace.set_span_in_context(span))
        return carrier.get("traceparent", "").encode("latin-1")

    @staticmethod
    def trace_id(span: Span) -> str:
        """The span's trace id as 32 hex digits (for log lines)."""
        return format(span.get_span_context().trace_id, "032x")

    def flush(self) -> None:
        """Export what is buffered (shutdown)."""
        self.provider.force_flush()


def build_tracing(settings: TracingSettings) -> Tracing | None:
    """The tracing of an app, or None when tracing is off."""
    if not settings.enabled:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "MLGATE_TRACING__ENABLED=true needs OpenTelemetry: pip install 'mlgate[tracing]'"
        ) from exc
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        shutdown_on_exit=True,
    )
    exporter: SpanExporter | None = None
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.endpoint)
    elif settings.exporter == "console":
        exporter = ConsoleSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)
