"""Prediction ids: one per scored row, unique across workers and replicas.

A request gets one key - 48 bits of milliseconds since the epoch and 80 random bits in
Crockford base32 (26 characters, sortable by time, like a ULID) - and its row ``i`` is
``<key>-<i>``. The random bits are the OS's, drawn in bulk (:mod:`mlgate.randomness`);
the per-row strings are built only where a codec or the audit log needs them.
"""

from __future__ import annotations

import re
import time

from mlgate.randomness import random_bytes

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PREDICTION_ID = re.compile(r"^([0-9A-HJKMNP-TV-Z]{26})-(0|[1-9][0-9]{0,8})$")


#: Every 10-bit value as its two base32 characters (13 lookups make a key, not 26).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def encode_key(value: int) -> str:
    """A 130-bit (at most) number as 26 Crockford base32 characters, most significant
    first."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def new_key() -> str:
    """A fresh request key (26 characters, time-ordered)."""
    return encode_key((int(time.time() * 1000) << 80) | int.from_bytes(random_bytes(10), "big"))


def prediction_id(key: str, row: int) -> str:
    return f"{key}-{row}"


def parse_prediction_id(text: str) -> tuple[str, int] | None:
    """(request key, row) of a prediction id, or None when it is not one."""
    match = PREDICTION_ID.match(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2))
