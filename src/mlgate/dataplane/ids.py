"""Prediction ids: one per scored row, unique across workers and replicas.

A request gets one key - 48 bits of milliseconds since the epoch and 80 random bits in
Crockford base32 (26 characters, sortable by time, like a ULID) - and its row ``i`` is
``<key>-<i>``. Making the key costs one ``os.urandom`` call per request; the per-row
strings are built only where a codec or the audit log needs them.
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PREDICTION_ID = re.compile(r"^([0-9A-HJKMNP-TV-Z]{26})-(0|[1-9][0-9]{0,8})$")


def new_key() -> str:
    """A fresh request key (26 characters, time-ordered)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def prediction_id(key: str, row: int) -> str:
    return f"{key}-{row}"


def parse_prediction_id(text: str) -> tuple[str, int] | None:
    """(request key, row) of a prediction id, or None when it is not one."""
    match = PREDICTION_ID.match(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2))
