"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

:class:`RequestContextMiddleware` gives each request an id (echoing a valid
``X-Request-ID``), enforces the body size limit, and turns any unhandled exception into
the generic 500 envelope so that even crashes carry the request id and no internals.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.api.errors import HEAD_KEY, error_content, is_oip_path
from mlgate.api.limits import HEADERS_STATE as RATE_LIMIT_HEADERS
from mlgate.api.responses import dumps
from mlgate.context import (
    cache_var,
    model_var,
    principal_var,
    protocol_var,
    request_id_var,
    rows_var,
    version_var,
)
from mlgate.errors import PayloadTooLarge
from mlgate.randomness import random_bytes

log = logging.getLogger("mlgate.request")

_INFERENCE_VARS = (principal_var, model_var, version_var, protocol_var, rows_var, cache_var)
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_REQUEST_ID_HEADER = b"x-request-id"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER:
            return value.decode("ascii") if _VALID_REQUEST_ID.match(value) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def new_request_id() -> str:
    """A random version-4 UUID as 32 hex digits, as ``uuid.uuid4().hex`` writes it (a
    few times cheaper: no UUID object, and the OS's random bytes drawn in bulk)."""
    raw = bytearray(random_bytes(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    return raw.hex()


class RequestContextMiddleware:
    """Request id, body limit and last-resort error handling for HTTP requests."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # RFC 9110: a server that answers GET answers HEAD with the same status and
        # headers and no body. The routes see a GET; the method is HEAD again from the
        # response on (the server then sends no body, and the access log says HEAD).
        head = scope["method"] == "HEAD"
        if head:
            scope["method"] = "GET"
            scope[HEAD_KEY] = True
        request_id = _incoming_request_id(scope) or new_request_id()
        token = request_id_var.set(request_id)
        # A server runs each request in a task of its own (a fresh context); in-process
        # callers (httpx's ASGITransport) run them one after another in one task, where
        # the previous request's principal and model would still be set.
        for var in _INFERENCE_VARS:
            var.set(None)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (_REQUEST_ID_HEADER, request_id.encode("ascii"))
        started = False

        state = scope["state"]

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if head:
                    scope["method"] = "HEAD"
                headers = [*message.get("headers", []), header]
                limits = state.get(RATE_LIMIT_HEADERS)
                if limits and not any(name == b"ratelimit-limit" for name, _ in headers):
                    headers += [(k.lower().encode(), v.encode()) for k, v in limits.items()]
                message["headers"] = headers
            elif head and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        try:
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                await self._send_error(
                    send_with_id,
                    413,
                    "payload_too_large",
                    f"request body of {length} bytes exceeds the limit of "
                    f"{self.max_body_bytes} bytes",
                    {"limit_bytes": self.max_body_bytes},
                    scope,
                )
                return
            if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
                # No name, id or filter of this API holds one, and PostgreSQL refuses
                # them in any text: refused here, the same on every database.
                await self._send_error(
                    send_with_id,
                    400,
                    "bad_request",
                    "the URL contains a NUL character (%00)",
                    [{"field": "url", "message": "NUL character"}],
                    scope,
                )
                return
            await self.app(scope, self._limited(receive), send_with_id)
        except ClientDisconnect:
            # The client went away (or the server timed its body out and answered 408):
            # nobody is left to answer.
            log.info("client disconnected before its request body ended")
        except Exception:
            log.exception("unhandled error")
            if not started:
                await self._send_error(
                    send_with_id, 500, "internal_error", "internal server error", None, scope
                )
        finally:
            request_id_var.reset(token)
            if head:
                scope["method"] = "HEAD"

    def _limited(self, receive: Receive) -> Receive:
        """Count streamed body bytes (chunked uploads carry no Content-Length)."""
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {limit} bytes",
                        details={"limit_bytes": limit},
                    )
            return message

        return wrapped

    @staticmethod
    async def _send_error(
        send: Send, status: int, code: str, message: str, details: object, scope: Scope
    ) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        body = dumps(error_content(code, message, details, oip=is_oip_path(path)))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
