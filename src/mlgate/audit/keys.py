"""Time in request keys.

A request key (:func:`mlgate.dataplane.ids.new_key`) is 48 bits of milliseconds since the
epoch and 80 random bits in Crockford base32, most significant first, and the alphabet
is in ASCII order: comparing keys as strings compares their times. So "answered after
``t``" is ``request_key >= key_floor(t)``, a range of the audit table's primary key.
"""

from __future__ import annotations

from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
KEY_LENGTH = 26
_MAX_MS = (1 << 48) - 1


def _encode(value: int) -> str:
    chars = []
    for _ in range(KEY_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def key_floor(seconds: float) -> str:
    """The smallest request key of the millisecond that contains ``seconds``."""
    ms = min(max(int(seconds * 1000), 0), _MAX_MS)
    return _encode(ms << 80)


def key_seconds(key: str) -> float:
    """When the request of ``key`` was answered (seconds since the epoch)."""
    value = 0
    for char in key:
        value = (value << 5) | _VALUE[char]
    return (value >> 80) / 1000


def key_datetime(key: str) -> datetime:
    return datetime.fromtimestamp(key_seconds(key), UTC)
