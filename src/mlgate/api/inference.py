"""What every inference route shares: the data plane's context for an HTTP request, and
the HTTP response for an encoded answer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from mlgate.api.state import AppState
from mlgate.dataplane.types import Encoded, InferenceContext
from mlgate.errors import MlgateError


def http_context(request: Request, protocol: str) -> InferenceContext:
    """The caller (authenticated by the route's scope guard), how to charge its rows, and
    how to tell that it went away."""
    state: AppState = request.app.state.mlgate
    principal = request.state.principal
    return InferenceContext(
        protocol=protocol,
        principal=principal,
        request_id=request.state.request_id,
        charge_rows=partial(state.limits.charge, request, principal),
        disconnected=partial(_disconnect, request.receive),
    )


@asynccontextmanager
async def charging(request: Request) -> AsyncIterator[None]:
    """Around an inference route: the data plane charges the request with its rows in one
    limiter call; a request that fails before (bad body, unknown model) is charged alone
    here, so that failures are not free. A refusal of that charge changes nothing: the
    request's own error is the answer."""
    try:
        yield
    except Exception:
        principal = getattr(request.state, "principal", None)
        if principal is not None and not getattr(request.state, "rate_charged", False):
            state: AppState = request.app.state.mlgate
            with contextlib.suppress(MlgateError):
                await state.limits.charge(request, principal, 0)
        raise


async def _disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (the body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def encoded_response(encoded: Encoded, status_code: int = 200) -> Response:
    """The response for an encoded body."""
    return Response(
        encoded.body,
        status_code=status_code,
        media_type=encoded.media_type,
        headers=encoded.headers or None,
    )
