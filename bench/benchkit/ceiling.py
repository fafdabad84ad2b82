"""The ceiling: a bare Starlette app on uvicorn that reads the body and sends a fixed reply.

Nothing a Python ASGI server does per request can be cheaper, so every other server is
also reported as a fraction of this one, measured in the same run on the same core.
Run as ``uvicorn benchkit.ceiling:app --app-dir bench``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REPLY = b'{"predicted_class":1,"predicted_class_name":"Bot","confidence":0.99}'


async def health(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


async def predict(request: Request) -> Response:
    await request.body()  # reading the body is part of what every server must do
    return Response(REPLY, media_type="application/json")


app = Starlette(
    routes=[
        Route("/health", health, methods=["GET"]),
        Route("/{path:path}", predict, methods=["POST"]),
    ]
)
