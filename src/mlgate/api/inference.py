"""What every inference route shares: the data plane's context for an HTTP request, and
the HTTP response for an encoded answer."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response

from mlgate.api.state import AppState
from mlgate.dataplane.types import Encoded, InferenceContext


def http_context(request: Request, protocol: str) -> InferenceContext:
    """The caller (authenticated by the route's scope guard) and how to charge its rows."""
    state: AppState = request.app.state.mlgate
    principal = request.state.principal
    return InferenceContext(
        protocol=protocol,
        principal=principal,
        request_id=request.state.request_id,
        charge_rows=partial(state.limits.charge_rows, request, principal),
    )


def encoded_response(encoded: Encoded, status_code: int = 200) -> Response:
    """The response for an encoded body."""
    return Response(
        encoded.body,
        status_code=status_code,
        media_type=encoded.media_type,
        headers=encoded.headers or None,
    )
