"""Parsing JSON bodies: strict and fast first, lenient for the errors worth naming.

orjson is strict: it refuses ``NaN``, ``Infinity`` and numbers that overflow a double.
Such bodies are parsed again by the standard library with hooks, so that validation can
name the field: ``NaN``/``Infinity`` tokens become floats (a feature's substitution rule
may accept them), and numbers beyond a double (``1e400``, a 400-digit integer) become
:class:`~mlgate.dataplane.validation.OutOfRange` markers instead of ``inf`` or a huge
``int`` that would overflow later.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from mlgate.dataplane.validation import OutOfRange
from mlgate.errors import InvalidJSON

#: More digits than this cannot fit in a double, whatever they are.
_MAX_DOUBLE_DIGITS = 309
_MAX_DOUBLE = 1.7976931348623157e308


def _parse_float(text: str) -> float | OutOfRange:
    value = float(text)
    return OutOfRange(text) if math.isinf(value) else value


def _parse_int(text: str) -> int | OutOfRange:
    if len(text) > _MAX_DOUBLE_DIGITS + 1:
        return OutOfRange(text)
    value = int(text)
    return OutOfRange(text) if abs(value) > _MAX_DOUBLE else value


_LENIENT = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int)


def parse_json(body: bytes) -> Any:
    """The parsed document; 400 for an empty or malformed body."""
    if not body.strip():
        raise InvalidJSON("request body is empty: send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as strict_error:
        try:
            return _LENIENT.decode(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise InvalidJSON(
                f"request body is not valid JSON: {strict_error}",
                details={"position": getattr(strict_error, "pos", None)},
            ) from None
