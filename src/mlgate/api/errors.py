"""One error envelope for every failure, mapped once at the edge.

The envelope echoes parts of bad input (a version, a content type, a field) to say what
is wrong; :func:`error_content` caps every string in it, so that a 5 MB bad value
produces a short error, not a 10 MB one.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from mlgate.api.responses import ORJSONResponse
from mlgate.audit.usage import count_error_response
from mlgate.context import current_request_id
from mlgate.errors import DatabaseUnavailable, MlgateError

log = logging.getLogger("mlgate.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


#: Set in the scope of a HEAD request, which the routes see as a GET (the request-context
#: middleware answers HEAD for every GET route).
HEAD_KEY = "mlgate.head"
#: Routes of the Open Inference Protocol answer errors in its own shape.
OIP_PREFIX = "/v2"
#: Longest message, and longest string anywhere in ``details``, an error carries.
MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 300
_MAX_DETAIL_DEPTH = 8


def is_oip_path(path: str) -> bool:
    """Whether a request path (without the root path) belongs to the /v2 protocol."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _clip_details(value: Any, depth: int = 0) -> Any:
    """``details`` with every string clipped (keys too), however deeply nested."""
    if isinstance(value, str):
        return _clip(value, MAX_DETAIL_CHARS)
    if depth >= _MAX_DETAIL_DEPTH:
        return value if isinstance(value, int | float | bool) or value is None else "…"
    if isinstance(value, dict):
        return {
            (_clip(k, MAX_DETAIL_CHARS) if isinstance(k, str) else k): _clip_details(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clip_details(v, depth + 1) for v in value]
    return value


def error_content(
    code: str,
    message: str,
    details: Any = None,
    *,
    request_id: str | None = None,
    oip: bool = False,
) -> dict[str, Any]:
    """The envelope body: ``{"error": {"code", "message", "request_id", "details"}}``,
    with the message and every string in the details clipped; on /v2, the Open Inference
    Protocol's ``{"error": "message"}``."""
    if oip:
        return {"error": _clip(message, MAX_MESSAGE_CHARS)}
    return {
        "error": {
            "code": code,
            "message": _clip(message, MAX_MESSAGE_CHARS),
            "request_id": request_id or current_request_id(),
            "details": _clip_details(details) if details is not None else None,
        }
    }


def _is_oip(request: Request) -> bool:
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return is_oip_path(path)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    content = error_content(code, message, details, oip=_is_oip(request))
    count_error_response(request, status)
    return ORJSONResponse(content, status_code=status, headers=headers)


async def _mlgate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MlgateError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and exc.status_code in (429, 503, 504):
        metrics.error(exc)
    if exc.status_code >= 500 and exc.status_code != 503:
        log.error("request failed: %s", exc.message, extra={"error_code": exc.code})
    return error_response(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        method = "HEAD" if request.scope.get(HEAD_KEY) else request.method
        message = f"method {method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(request, exc.status_code, code, message, None, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path (RFC 9110: a 405's ``Allow``
    lists them all; Starlette's router names only the first matching route's)."""
    methods: set[str] = set()
    # FastAPI keeps included routers as branches: walk the routes they hold.
    for context in iter_route_contexts(request.app.routes):
        match, _ = context.route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(context.methods or ())
    if "GET" in methods:
        methods.add("HEAD")  # answered for every GET route (see HEAD_KEY)
    return sorted(methods)


def _clean_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": _clean_loc(err.get("loc", ())), "message": err.get("msg", "invalid")}
        for err in exc.errors()
    ]
    fields = ", ".join(d["field"] for d in details) or "request"
    return error_response(request, 422, "validation_error", f"invalid value for {fields}", details)


async def _database_error(request: Request, exc: Exception) -> Response:
    """The database cannot be reached or written (file gone or read-only, server down,
    pool exhausted): a 503 saying that nothing was stored, never a 500. The driver's
    message is logged without the SQL statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    log.error("database unavailable", extra={"db_error": f"{type(orig).__name__}: {orig}"[:500]})
    error = DatabaseUnavailable(
        "the database cannot be reached or written right now: the request was not carried "
        "out (nothing was stored); retry later",
        headers={"Retry-After": "5"},
    )
    return error_response(
        request, error.status_code, error.code, error.message, None, error.headers
    )


async def _database_rejected_value(request: Request, exc: Exception) -> Response:
    """A value the database refuses to store or compare (SQLSTATE class 22, "data
    exception": a NUL character in a text, which PostgreSQL never accepts; a number out of
    a column's range): the request's input, so a 422, never a 500. Any other driver error
    is a bug: raised on to the last-resort handler (the generic 500, the traceback logged)."""
    assert isinstance(exc, sa_exc.DBAPIError)
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate.startswith("22"):
        log.info("database refused a value", extra={"sqlstate": sqlstate})
        return error_response(
            request,
            422,
            "validation_error",
            "a value of the request cannot be stored or looked up: text must not contain "
            "NUL characters, numbers must fit their field",
            [{"field": "request", "message": "refused by the database", "sqlstate": sqlstate}],
        )
    raise exc


#: Database failures that say "the database is unavailable", not "mlgate has a bug".
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every known error into the envelope."""
    app.add_exception_handler(MlgateError, _mlgate_error)
    for error in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _database_error)
    # The other driver errors (the handlers above take their subclasses first).
    app.add_exception_handler(sa_exc.DBAPIError, _database_rejected_value)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
