"""The inference routes served without FastAPI's per-request machinery.

A prediction is the request the gateway exists for, and the profile under load showed
FastAPI's routing and dependency resolution taking about a fifth of a single-row
request's time. This pure-ASGI layer (inside the request-context and CORS middleware,
so ids, limits on body size and CORS headers apply as everywhere) matches the inference
routes itself and calls their handlers directly: authentication, the scope check, the
data plane. Errors go through the app's own exception handlers, so their answers are
exactly those of every other route. The FastAPI routes stay registered: they describe
the same routes in the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from mlgate.observability.http import ROUTE_KEY

Handler = Callable[..., Awaitable[Response]]

_PARAMETER = re.compile(r"\{(\w+)\}")


def compile_template(template: str) -> re.Pattern[str]:
    """``/v1/models/{model}/predict`` as a regex whose groups are the parameters (each
    one path segment)."""
    parts = _PARAMETER.split(template)
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(f"^{pattern}$")


class HotRoutes:
    """Dispatches ``POST`` requests on the inference paths to their handlers."""

    def __init__(self, app: ASGIApp, routes: list[tuple[str, Handler]]) -> None:
        """``routes``: (path template such as ``/v1/models/{model}/predict``, handler)."""
        self.app = app
        self.routes = [
            (compile_template(template), template, handler) for template, handler in routes
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = get_route_path(scope)
            for pattern, template, handler in self.routes:
                match = pattern.match(path)
                if match is not None:
                    # Metrics and logs label the request with its template, cheaply.
                    scope[ROUTE_KEY] = template
                    await self._serve(scope, receive, send, handler, match.groupdict())
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        handler: Handler,
        params: dict[str, str],
    ) -> None:
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            response = await handler(request, **params)
        except Exception as exc:
            response = await _handled(request, exc)
        await response(scope, receive, send)


async def _handled(request: Request, exc: Exception) -> Response:
    """The answer the app's exception handlers give ``exc`` (re-raised when none
    handles it: the request-context middleware answers 500)."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    raise exc
