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

Handler = Callable[..., Awaitable[Response]]


class HotRoutes:
    """Dispatches ``POST`` requests on the inference paths to their handlers."""

    def __init__(self, app: ASGIApp, routes: list[tuple[str, Handler]]) -> None:
        self.app = app
        self.routes = [(re.compile(f"^{pattern}$"), handler) for pattern, handler in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = get_route_path(scope)
            for pattern, handler in self.routes:
                match = pattern.match(path)
                if match is not None:
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
