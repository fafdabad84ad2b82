"""The domain exception tree; every error a client sees is one of these.

    MlgateError                       500 internal_error
    ├── BadRequest                    400 bad_request
    │   └── InvalidJSON               400 invalid_json
    ├── Unauthorized                  401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not_found
    │   ├── ModelNotFound             404 model_not_found
    │   └── VersionNotFound           404 version_not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── RequestTimeout                408 request_timeout
    ├── Conflict                      409 conflict
    ├── PayloadTooLarge               413 payload_too_large
    ├── UnsupportedMediaType          415 unsupported_media_type
    ├── ValidationFailed              422 validation_error
    ├── RateLimited                   429 rate_limited
    ├── HeadersTooLarge               431 headers_too_large
    ├── ServiceUnavailable            503 not_ready
    │   ├── Overloaded                503 overloaded
    │   ├── DatabaseUnavailable       503 database_unavailable
    │   ├── TooManyConnections        503 too_many_connections
    │   └── RateLimiterUnavailable    503 rate_limiter_unavailable (mlgate.ratelimit)
    ├── NotAvailable                  501 not_available (a feature this server lacks)
    ├── PredictionTimeout             504 prediction_timeout
    ├── ClientGone                    499 client_closed_request (nobody reads the answer)
    └── ModelExecutionError           500 model_error

The API edge (:mod:`mlgate.api.errors`) turns each into the one JSON envelope
``{"error": {"code", "message", "request_id", "details"}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MlgateError(Exception):
    """Base of all errors with an HTTP status and a stable machine-readable code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(MlgateError):
    status_code = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class Unauthorized(MlgateError):
    """No credentials, or credentials that do not prove who the caller is (401).

    Always answered with ``WWW-Authenticate`` so clients know how to authenticate.
    """

    status_code = 401
    code = "unauthorized"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
        invalid_token: bool = False,
    ) -> None:
        challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
        super().__init__(
            message, details=details, headers={"WWW-Authenticate": challenge, **(headers or {})}
        )


class Forbidden(MlgateError):
    """The caller is known but may not do this: a missing scope or a disabled user (403)."""

    status_code = 403
    code = "forbidden"


class NotFound(MlgateError):
    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class MethodNotAllowed(MlgateError):
    status_code = 405
    code = "method_not_allowed"


class RequestTimeout(MlgateError):
    """The client did not send its request head or body in time (408); the server closes
    the connection after answering."""

    status_code = 408
    code = "request_timeout"


class Conflict(MlgateError):
    """The request clashes with existing state, e.g. a username already taken (409)."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(MlgateError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(MlgateError):
    status_code = 415
    code = "unsupported_media_type"


class HeadersTooLarge(MlgateError):
    """The request line and headers exceed the server's bound (431), refused before the
    application (and so before authentication) sees them."""

    status_code = 431
    code = "headers_too_large"


class ValidationFailed(MlgateError):
    """The request is well-formed JSON but its content is wrong (422)."""

    status_code = 422
    code = "validation_error"


class RateLimited(MlgateError):
    """Over the caller's request or row allowance; ``Retry-After`` says when to retry."""

    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(MlgateError):
    status_code = 503
    code = "not_ready"


class SchemaTooNew(ServiceUnavailable):
    """The database was migrated by a newer mlgate: its revision is not one this version
    ships, so nothing here can read or migrate it safely."""

    code = "schema_too_new"


class Overloaded(ServiceUnavailable):
    """Too many requests are already waiting for this model version: shed at once with
    ``Retry-After`` rather than queued until they time out (503)."""

    code = "overloaded"


class AuditBehind(ServiceUnavailable):
    """The audit log's queue stayed full for as long as a request may wait, and the
    server is set to record every answered row (``when_full: wait``): not answered,
    retry shortly (503 with ``Retry-After``)."""

    code = "audit_behind"


class NotAvailable(MlgateError):
    """The request is valid but this server cannot do it as installed (501)."""

    status_code = 501
    code = "not_available"


class PredictionTimeout(MlgateError):
    """The model did not answer within the prediction timeout (504)."""

    status_code = 504
    code = "prediction_timeout"


class ClientGone(MlgateError):
    """The client went away while its prediction waited; the work was abandoned."""

    status_code = 499
    code = "client_closed_request"


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached or written: the change asked for was not stored."""

    code = "database_unavailable"


class TooManyConnections(ServiceUnavailable):
    """A worker holds its maximum of open connections; the new one is answered and closed."""

    code = "too_many_connections"


class ModelExecutionError(MlgateError):
    """The model raised while scoring valid input; details stay in the server log."""

    status_code = 500
    code = "model_error"
