"""Reading request bodies: the content type a route accepts, and JSON parsed fast."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from mlgate.errors import UnsupportedMediaType
from mlgate.protocols.common import require_object
from mlgate.protocols.json_parse import parse_json

__all__ = ["is_json", "read_body", "read_json", "require_object"]


def is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON (``application/json`` or ``application/*+json``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_body(request: Request) -> bytes:
    """The raw body of a JSON request; 415 for a content type that is not JSON (an absent
    one is taken as JSON)."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json(content_type):
        raise UnsupportedMediaType(
            f"content type {content_type[:100]!r} is not supported: send application/json",
            details={"content_type": content_type[:100], "supported": ["application/json"]},
        )
    return await request.body()


async def read_json(request: Request) -> Any:
    """The parsed body; 415 for a non-JSON content type, 400 for malformed JSON."""
    return parse_json(await read_body(request))
