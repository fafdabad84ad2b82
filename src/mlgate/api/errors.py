"""One error envelope for every failure, mapped once at the edge."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlgate.api.responses import ORJSONResponse
from mlgate.audit.usage import count_error_response
from mlgate.context import current_request_id
from mlgate.errors import MlgateError

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


#: Routes of the Open Inference Protocol answer errors in its own shape.
OIP_PREFIX = "/v2"


def is_oip_path(path: str) -> bool:
    """Whether a request path (without the root path) belongs to the /v2 protocol."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_content(
    code: str, message: str, details: Any = None, *, oip: bool = False
) -> dict[str, Any]:
    """The envelope body: ``{"error": {"code", "message", "request_id", "details"}}``;
    on /v2, the Open Inference Protocol's ``{"error": "message"}``."""
    if oip:
        return {"error": message}
    return {
        "error": {
            "code": code,
            "message": message,
            "request_id": current_request_id(),
            "details": details,
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
    if exc.status_code >= 500 and exc.status_code != 503:
        log.error("request failed: %s", exc.message, extra={"error_code": exc.code})
    return error_response(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(request, exc.status_code, code, message, None, dict(exc.headers or {}))


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


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every known error into the envelope."""
    app.add_exception_handler(MlgateError, _mlgate_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
