"""The client's exceptions: one tree, mapped from the server's error envelope codes.

    MlgateClientError                       every error the client raises
    ├── ConnectionFailed                    no answer: refused, reset, DNS (after retries)
    ├── Timeout                             no answer in time (the client's own timeout)
    │   └── PredictionTimeout (APIError)    504 prediction_timeout: the model took too long
    ├── InputError (ValueError)             refused before sending: missing columns, shapes
    └── APIError                            the server answered with an error envelope
        ├── BadRequest                      400 bad_request, invalid_json
        ├── AuthenticationError             401 unauthorized
        ├── PermissionDenied                403 forbidden
        ├── NotFound                        404 not_found
        │   ├── ModelNotFound               404 model_not_found
        │   └── VersionNotFound             404 version_not_found
        ├── Conflict                        409 conflict
        ├── PayloadTooLarge                 413 payload_too_large
        ├── UnsupportedMediaType            415 unsupported_media_type
        ├── ValidationError                 422 validation_error (``details``: field, message)
        ├── RateLimited                     429 rate_limited (``retry_after`` seconds)
        ├── ServerError                     500 internal_error, model_error; other 5xx
        └── ServerUnavailable               503 not_ready, overloaded, … (``retry_after``)

Every :class:`APIError` carries the envelope: ``status_code``, ``code``, ``message``,
``request_id`` and ``details``. The Open Inference Protocol (/v2) answers errors as
``{"error": "message"}`` without a code; there the status alone picks the class, and a
validation message's field (``invalid input: <field>: …``) becomes ``details``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx


class MlgateClientError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(MlgateClientError):
    """The server could not be reached (connection refused or reset, DNS), after retries."""


class Timeout(MlgateClientError):
    """No answer within the client's timeout (or, as :class:`PredictionTimeout`, the
    server's prediction timeout)."""


class InputError(MlgateClientError, ValueError):
    """The input was refused before anything was sent (e.g. a DataFrame lacks features).

    ``details`` lists the problems as ``{"field", "message"}`` objects, like a 422's.
    """

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class APIError(MlgateClientError):
    """The server answered with an error: its status and the envelope's fields."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        request_id: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.details = details
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"


class BadRequest(APIError):
    """400: the body is not what the route reads (malformed JSON, a bad header)."""


class AuthenticationError(APIError):
    """401: no credentials, or credentials the server does not accept."""

    @property
    def invalid_token(self) -> bool:
        """The server refused a token it could read (expired, revoked, forged)."""
        return 'error="invalid_token"' in self.headers.get("www-authenticate", "")


class PermissionDenied(APIError):
    """403: the caller is known but lacks a scope, or the user is disabled."""


class NotFound(APIError):
    """404: no such route, model, version, user or key."""


class ModelNotFound(NotFound):
    """404: no model of that name is served."""


class VersionNotFound(NotFound):
    """404: the model has no such version or alias."""


class Conflict(APIError):
    """409: clashes with existing state (a username already taken)."""


class PayloadTooLarge(APIError):
    """413: the body, or a batch larger than the caller's whole row budget."""


class UnsupportedMediaType(APIError):
    """415: a content type or encoding the route does not read."""


class ValidationError(APIError):
    """422: the content is wrong; ``details`` name each field (``{"field", "message"}``).

    For chunked calls ``row`` is the index, in the caller's input, of the first row
    the server named (None when the field names no row).
    """

    row: int | None = None

    @property
    def fields(self) -> list[str]:
        """The offending fields, in the order the server gave them."""
        if not isinstance(self.details, list):
            return []
        return [d["field"] for d in self.details if isinstance(d, dict) and "field" in d]


class RateLimited(APIError):
    """429: over the caller's request or row allowance; retry after ``retry_after`` s."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_of(self.headers)


class ServerError(APIError):
    """500 (a server bug or a model that failed) and any other 5xx without a class."""


class ServerUnavailable(APIError):
    """503: still loading, overloaded, or a dependency down; ``retry_after`` s."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_of(self.headers)


class PredictionTimeout(APIError, Timeout):
    """504: the model did not answer within the server's prediction timeout."""


_BY_CODE: dict[str, type[APIError]] = {
    "bad_request": BadRequest,
    "invalid_json": BadRequest,
    "unauthorized": AuthenticationError,
    "forbidden": PermissionDenied,
    "not_found": NotFound,
    "model_not_found": ModelNotFound,
    "version_not_found": VersionNotFound,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "validation_error": ValidationError,
    "rate_limited": RateLimited,
    "prediction_timeout": PredictionTimeout,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
    503: ServerUnavailable,
    504: PredictionTimeout,
}
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
    504: "prediction_timeout",
}
#: ``invalid input: <field>: <message>``, the server's one-field validation message.
_FIELD_MESSAGE = re.compile(r"^invalid input: (?P<field>[^:]+): (?P<message>.*)$", re.S)


def retry_after_of(headers: dict[str, str] | httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds form), or None when absent or unreadable."""
    value = headers.get("retry-after") if headers else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _class_for(status: int, code: str) -> type[APIError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer, from the v1 envelope or the /v2 shape."""
    status = response.status_code
    headers = {k.lower(): v for k, v in response.headers.items()}
    code, message, request_id, details = "", "", headers.get("x-request-id"), None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # the v1 envelope
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        request_id = error.get("request_id") or request_id
        details = error.get("details")
    elif isinstance(error, str):  # the Open Inference Protocol's {"error": "message"}
        message = error
        match = _FIELD_MESSAGE.match(message)
        if status == 422 and match:
            details = [{"field": match["field"], "message": match["message"]}]
    else:
        message = response.text[:500] or response.reason_phrase
    code = code or _CODES_BY_STATUS.get(status, "http_error")
    cls = _class_for(status, code)
    return cls(
        message or f"HTTP {status}",
        status_code=status,
        code=code,
        request_id=request_id,
        details=details,
        headers=headers,
    )


def error_from_transport(exc: httpx.TransportError) -> MlgateClientError:
    """The client's exception for an httpx transport failure."""
    if isinstance(exc, httpx.TimeoutException):
        error: MlgateClientError = Timeout(f"no answer in time: {exc!r}")
    else:
        error = ConnectionFailed(f"cannot reach the server: {exc!r}")
    error.__cause__ = exc
    return error
