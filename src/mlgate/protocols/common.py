"""Small pieces the JSON codecs share: body fields, timestamps, JSON output."""

from __future__ import annotations

import time
from typing import Any

import orjson

from mlgate.dataplane.types import Encoded, InferenceResult
from mlgate.dataplane.validation import json_type
from mlgate.devices.store import check_device_id
from mlgate.errors import ValidationFailed
from mlgate.logs import iso_ms

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z`` (the date and
    time of the current second formatted once, as in the log lines)."""
    return iso_ms(time.time())[:-6] + "Z"


def json_encoded(content: Any) -> Encoded:
    """``content`` as a JSON response body."""
    return Encoded(orjson.dumps(content, option=_OPTIONS))


def require_object(body: Any, what: str = "request body") -> dict[str, Any]:
    """The body as a JSON object, or 422 saying what was sent instead."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            f"{what} must be a JSON object, got {json_type(body)}",
            details=[{"field": "body", "message": f"expected object, got {json_type(body)}"}],
        )
    return body


def require_field(body: dict[str, Any], key: str) -> Any:
    """A required field of the body (422 naming it when absent)."""
    if key not in body:
        raise ValidationFailed(
            f"{key} is required", details=[{"field": key, "message": "field required"}]
        )
    return body[key]


def optional_str(body: dict[str, Any], key: str) -> str | None:
    """An optional string field of the body (422 if present with another type)."""
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValidationFailed(
        f"{key} must be a string, got {json_type(value)}",
        details=[{"field": key, "message": f"expected string, got {json_type(value)}"}],
    )


def optional_device_id(body: dict[str, Any], key: str = "device_id") -> str | None:
    """The body's device id when it has one (422 naming ``key`` when malformed)."""
    value = body.get(key)
    return None if value is None else check_device_id(value, key)


def input_notes(result: InferenceResult) -> dict[str, Any]:
    """What the server did with the request's fields besides scoring them."""
    inputs = result.inputs
    notes: dict[str, Any] = {"ignored_features": list(inputs.ignored)}
    notes["substituted"] = [s.view() for s in inputs.substituted]
    if inputs.substituted_total > len(inputs.substituted):
        notes["substituted_total"] = inputs.substituted_total
    return notes


#: Rows one request may ask explanations for (they cost far more than the prediction).
MAX_EXPLAINED_ROWS = 100
DEFAULT_EXPLAIN_TOP = 5


def explain_option(value: Any, field: str = "explain") -> int | None:
    """The ``explain`` request option: ``true`` (the top 5 features), a number of top
    features (1-100), or ``false``/absent (None); 422 naming ``field`` otherwise."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_EXPLAIN_TOP
    if type(value) is int and 1 <= value <= 100:
        return value
    raise ValidationFailed(
        f"{field} must be true, false or a number of features from 1 to 100, got "
        f"{json_type(value)}",
        details=[{"field": field, "message": "expected true, false or 1-100"}],
    )
