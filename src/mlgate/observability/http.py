"""The outermost middleware: every request measured and, when enabled, logged once.

Pure ASGI and outside everything else, so it sees every answer - the hot inference
routes (:mod:`mlgate.api.hot`, which bypass FastAPI's routing), FastAPI's routes, the
413s and 500s the request-context middleware writes itself. The route label is the
route's *template* (``/v1/models/{model}/predict``), read after the request from the
scope where the hot routes or Starlette's router left the route that matched; a request
that matched none is ``unmatched``. Raw paths never become labels.

The access line (logger ``mlgate.access``, level info) carries the request id, the
trace id when tracing is on, the principal's id, the route template, the target with
any credential redacted, status, latency, model, version, rows, cache and client IP;
never a header value, a body or a feature value.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.context import cache_var, model_var, principal_var, rows_var, version_var
from mlgate.logs import LineHandler, redact_target

if TYPE_CHECKING:
    from mlgate.observability.metrics import Metrics
    from mlgate.observability.tracing import Tracing

access_log = logging.getLogger("mlgate.access")

#: Where the hot routes leave the template of the route they served.
ROUTE_KEY = "mlgate.route"
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (``unmatched`` if none did)."""
    template = scope.get(ROUTE_KEY)
    if template is not None:
        return str(template)
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class ObservabilityMiddleware:
    """HTTP metrics (requests, latency, in flight), the request's server span and the
    access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None,
        access: bool,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access = access
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        tracing = self.tracing
        if scope["type"] != "http" or (metrics is None and not self.access and tracing is None):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when nothing was sent (the server answers 500)
        span: Any = None
        if tracing is not None:
            span, token = tracing.start_request(scope)
            scope.setdefault("state", {})["trace_id"] = tracing.trace_id(span)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if span is not None and tracing is not None:
                    traceparent = (b"traceparent", tracing.traceparent(span))
                    message["headers"] = [*message.get("headers", []), traceparent]
            await send(message)

        if metrics is not None:
            metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            if metrics is not None:
                metrics.http_in_flight.dec()
                metrics.http_request(scope["method"], route, status, elapsed)
            if span is not None and tracing is not None:
                tracing.end_request(span, token, route, status)
            if self.access and access_log.isEnabledFor(logging.INFO):
                _log_access(scope, route, status, elapsed)


def _log_access(scope: Scope, route: str, status: int, elapsed: float) -> None:
    method = scope["method"]
    target = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
    query = scope.get("query_string", b"")
    if query:
        target = f"{target}?{query.decode('latin-1')}"
    fields: dict[str, Any] = {
        "request_id": scope.get("state", {}).get("request_id"),
        "method": method,
        "route": route,
        "target": redact_target(target),
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "client_ip": _client_ip(scope),
    }
    trace_id = scope.get("state", {}).get("trace_id")
    if trace_id:
        fields["trace_id"] = trace_id
    principal = principal_var.get()
    if principal is not None:
        fields["principal"] = principal.log_id
    model = model_var.get()
    if model is not None:
        fields["model"] = model
        fields["model_version"] = version_var.get()
    rows = rows_var.get()
    if rows is not None:
        fields["rows"] = rows
    cache = cache_var.get()
    if cache is not None:
        fields["cache"] = cache
    handler = _line_handler()
    if handler is None or not handler.write_fields(
        access_log.name, "info", f"{method} {route} {status}", fields
    ):
        access_log.info("%s %s %s", method, route, status, extra=fields)


def _line_handler() -> LineHandler | None:
    """The handler to write the access line to directly, when logging is set up the way
    :func:`mlgate.logs.logging_config` sets it up (``mlgate.access`` has its own
    :class:`LineHandler`, no filter and does not propagate); None otherwise - a test's
    capture handler, another configuration - and the line goes through :mod:`logging`."""
    handlers = access_log.handlers
    if len(handlers) != 1 or access_log.propagate or access_log.filters:
        return None
    handler = handlers[0]
    if type(handler) is not LineHandler or handler.level > logging.INFO:
        return None
    return handler


def _client_ip(scope: Scope) -> str | None:
    from mlgate.api.limits import CLIENT_IP_KEY, request_client_ip

    known = scope.get(CLIENT_IP_KEY)  # authentication worked it out already
    if known is not None:
        return str(known)
    try:
        return request_client_ip(Request(scope))
    except Exception:  # no app settings (a bare app in a test): the peer address
        client = scope.get("client")
        return client[0] if client else None
