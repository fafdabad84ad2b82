"""Reading JSON request bodies fast, with errors that say what is wrong."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request

from mlgate.errors import InvalidJSON, UnsupportedMediaType, ValidationFailed
from mlgate.inference.features import json_type


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request) -> Any:
    """The parsed body; 415 for a non-JSON content type, 400 for malformed JSON.

    orjson is strict: it refuses NaN, Infinity and numbers that overflow a double. Such
    bodies are parsed again with the standard library, which accepts them, so that the
    validation that follows can name the field holding the bad number.
    """
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not supported: send application/json",
            details={"content_type": content_type, "supported": ["application/json"]},
        )
    body = await request.body()
    if not body.strip():
        raise InvalidJSON("request body is empty: send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as strict_error:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidJSON(
                f"request body is not valid JSON: {strict_error}",
                details={"position": getattr(strict_error, "pos", None)},
            ) from None


def require_object(body: Any, what: str = "request body") -> dict[str, Any]:
    """The body as a JSON object, or 422 saying what was sent instead."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            f"{what} must be a JSON object, got {json_type(body)}",
            details=[{"field": "body", "message": f"expected object, got {json_type(body)}"}],
        )
    return body


def optional_str(body: dict[str, Any], key: str) -> str | None:
    """An optional string field of the body (422 if present with another type)."""
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValidationFailed(
        f"{key} must be a string, got {json_type(value)}",
        details=[{"field": key, "message": f"expected string, got {json_type(value)}"}],
    )
