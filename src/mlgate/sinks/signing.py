"""The webhook signature: HMAC-SHA256 over the timestamp and the body.

A delivery carries ``X-Mlgate-Timestamp: <unix seconds>`` and
``X-Mlgate-Signature: sha256=<hex>``, the HMAC-SHA256 with the shared secret of
``<timestamp> + "." + <raw body bytes>``. A receiver recomputes it over the bytes it
received, compares in constant time, and rejects a timestamp further than its
tolerance (e.g. 5 minutes) from its clock - a captured request replayed later fails -
and a ``X-Mlgate-Delivery`` id it has already accepted within that tolerance (the same
batch is sent again with the same id when an earlier attempt seemed to fail).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Mlgate-Timestamp"
SIGNATURE_HEADER = "X-Mlgate-Signature"
DELIVERY_HEADER = "X-Mlgate-Delivery"
SCHEME = "sha256="


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Mlgate-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a delivery is genuine and fresh (what a receiver does)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
