"""Fast JSON responses (orjson, numpy-aware)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(content: Any) -> bytes:
    """Serialise to JSON bytes; numpy scalars and arrays included."""
    return orjson.dumps(content, option=_OPTIONS)


class ORJSONResponse(JSONResponse):
    """A JSONResponse rendered with orjson."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
