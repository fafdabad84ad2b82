"""The binary tensor data extension of the Open Inference Protocol, both ways.

A request or response body is a JSON header followed by raw tensor bytes; the
``Inference-Header-Content-Length`` header gives the JSON part's length, and each
binary tensor's ``parameters.binary_data_size`` its share of the rest, in order of the
tensors. Decoding never makes Python numbers of the tensor data: the bytes go to
``np.frombuffer`` (:func:`mlgate.protocols.oip_tensors.from_bytes`).
"""

from __future__ import annotations

from typing import Any

import orjson

from mlgate.dataplane.types import Encoded
from mlgate.errors import BadRequest
from mlgate.protocols.json_parse import parse_json

HEADER_LENGTH = "Inference-Header-Content-Length"
MEDIA_TYPE = "application/octet-stream"


def header_length(value: str | None, body_length: int) -> int | None:
    """The JSON part's length from the request header (None: the body is all JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        raise BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {value[:40]!r}")
    length = int(text)
    if length > body_length:
        raise BadRequest(
            f"{HEADER_LENGTH} is {length}, beyond the {body_length}-byte body",
            details={"header_length": length, "body_length": body_length},
        )
    return length


def split(body: bytes, length: int | None) -> tuple[Any, memoryview | None]:
    """(parsed JSON header, the binary part) of a request body."""
    if length is None:
        return parse_json(body), None
    view = memoryview(body)
    return parse_json(bytes(view[:length])), view[length:]


def frame(header: dict[str, Any], chunks: list[bytes]) -> Encoded:
    """A response: JSON alone, or the JSON header followed by the binary chunks."""
    document = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Encoded(document)
    return Encoded(
        b"".join([document, *chunks]),
        media_type=MEDIA_TYPE,
        headers={HEADER_LENGTH: str(len(document))},
    )
