"""Per-request context, readable anywhere without passing arguments around.

Set once where each value becomes known (the request id by the request-context
middleware, the principal by authentication, model, version and protocol by the data
plane) and read by logs (and later metrics and spans). Every request runs in its own
copy of the context, so values never leak from one request to another.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlgate.auth.principal import Principal

request_id_var: ContextVar[str | None] = ContextVar("mlgate_request_id", default=None)
principal_var: ContextVar[Principal | None] = ContextVar("mlgate_principal", default=None)
model_var: ContextVar[str | None] = ContextVar("mlgate_model", default=None)
version_var: ContextVar[str | None] = ContextVar("mlgate_model_version", default=None)
protocol_var: ContextVar[str | None] = ContextVar("mlgate_protocol", default=None)
rows_var: ContextVar[int | None] = ContextVar("mlgate_rows", default=None)
cache_var: ContextVar[str | None] = ContextVar("mlgate_cache", default=None)
"""``hit`` or ``miss`` when the prediction cache was consulted."""


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return request_id_var.get()


def current_principal() -> Principal | None:
    """The authenticated caller of the request being served, if known yet."""
    return principal_var.get()


def bind_inference(model: str, version: str, protocol: str) -> None:
    """Record which model version a request is scoring, and through which protocol."""
    model_var.set(model)
    version_var.set(version)
    protocol_var.set(protocol)


def log_context() -> dict[str, Any]:
    """The context fields a log line carries (only those that are set)."""
    fields: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    principal = principal_var.get()
    if principal is not None:
        fields["principal"] = principal.log_id
    model = model_var.get()
    if model:
        fields["model"] = model
        fields["model_version"] = version_var.get()
        fields["protocol"] = protocol_var.get()
    return fields
