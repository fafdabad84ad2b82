"""API key material: ``mlg_<prefix>_<secret>``, shown once, stored as a SHA-256 digest.

- The prefix (12 hex characters) is public: it names the key in listings and logs and
  is the indexed column a request looks the key up by.
- The secret is 32 bytes from :mod:`secrets` (256 bits), URL-safe base64.
- The database keeps SHA-256 of the whole key. A slow password hash (argon2) protects
  low-entropy secrets chosen by people against guessing; a 256-bit random secret cannot
  be guessed, so a fast hash is as safe and keeps each request to microseconds. A leaked
  table therefore reveals no usable key, and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "mlg_"
_SECRET_BYTES = 32
_PUBLIC_ID_BYTES = 6
# token_urlsafe(32) gives 43 characters of [A-Za-z0-9_-].
_KEY_PATTERN = re.compile(r"^mlg_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: ``plaintext`` is shown to the caller once, then dropped."""

    plaintext: str
    prefix: str
    digest: str


def generate_key() -> NewKey:
    """A new random key with its public prefix and stored digest."""
    prefix = secrets.token_hex(_PUBLIC_ID_BYTES)
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return NewKey(plaintext=plaintext, prefix=prefix, digest=digest_key(plaintext))


def digest_key(plaintext: str) -> str:
    """The hex SHA-256 stored for a key."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def looks_like_key(credential: str) -> bool:
    """Tells an API key from a JWT in ``Authorization: Bearer`` (JWTs start with ``ey``)."""
    return credential.startswith(KEY_PREFIX)


def key_prefix(plaintext: str) -> str | None:
    """The public prefix of a well-formed key, or None."""
    match = _KEY_PATTERN.match(plaintext)
    return match.group(1) if match else None


def key_matches(plaintext: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented key with the stored digest."""
    return hmac.compare_digest(digest_key(plaintext), stored_digest)
