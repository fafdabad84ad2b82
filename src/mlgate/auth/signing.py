"""The keys that sign and verify access tokens, loaded (or, in development, made) at start."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from mlgate.db.engine import sqlite_path
from mlgate.settings import MIN_SECRET_BYTES, Settings

log = logging.getLogger("mlgate.auth")


class SigningKeyError(RuntimeError):
    """The configured signing material is missing or does not fit the algorithm."""


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """What :class:`~mlgate.auth.tokens.TokenCodec` signs and verifies with."""

    algorithm: str
    signing_key: Any
    verification_key: Any


def load_signing_keys(settings: Settings) -> SigningKeys:
    """Keys for ``settings.auth.jwt_algorithm``; development gets a persisted random secret."""
    auth = settings.auth
    if auth.symmetric:
        if auth.jwt_secret is not None:
            secret = auth.jwt_secret.get_secret_value().encode()
        else:
            secret = development_secret(settings)
        return SigningKeys(auth.jwt_algorithm, secret, secret)
    if auth.jwt_private_key_file is None:
        raise SigningKeyError(
            f"MLGATE_AUTH__JWT_ALGORITHM={auth.jwt_algorithm} needs "
            "MLGATE_AUTH__JWT_PRIVATE_KEY_FILE (a PEM private key)"
        )
    private = _read_private_key(auth.jwt_private_key_file)
    _check_key_type(auth.jwt_algorithm, private)
    if auth.jwt_public_key_file is not None:
        public = _read_public_key(auth.jwt_public_key_file)
        if public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise SigningKeyError("jwt_public_key_file is not the public half of the private key")
    else:
        public = private.public_key()
    return SigningKeys(auth.jwt_algorithm, private, public)


def default_secret_file(settings: Settings) -> Path | None:
    """Where development keeps its generated secret (None: in-memory database, no file)."""
    if settings.auth.jwt_secret_file is not None:
        return settings.auth.jwt_secret_file
    if settings.uses_sqlite:
        db_file = sqlite_path(settings.database_url)
        return None if db_file is None else db_file.parent / "jwt_secret"
    return Path("var") / "jwt_secret"


def development_secret(settings: Settings) -> bytes:
    """A random secret made once and kept (mode 0600) so that tokens survive restarts."""
    path = default_secret_file(settings)
    if path is None:
        log.warning("in-memory database: access tokens are signed with a per-process secret")
        return secrets.token_bytes(MIN_SECRET_BYTES)
    if not path.exists():
        _publish_secret(path)
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise SigningKeyError(f"{path} holds fewer than {MIN_SECRET_BYTES} bytes: delete it")
    return secret


def _publish_secret(path: Path) -> None:
    # Written aside, then linked into place: link fails if another worker won the race,
    # and nobody ever reads a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            log.warning(
                "no MLGATE_AUTH__JWT_SECRET set: generated a development secret",
                extra={"secret_file": str(path)},
            )
    finally:
        temporary.unlink(missing_ok=True)


def _read_private_key(path: Path) -> Any:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the JWT private key {path}: {exc}") from None


def _read_public_key(path: Path) -> Any:
    try:
        return serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"cannot read the JWT public key {path}: {exc}") from None


def _check_key_type(algorithm: str, key: Any) -> None:
    if algorithm.startswith("RS"):
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise SigningKeyError(f"{algorithm} needs an RSA private key of at least 2048 bits")
    elif algorithm == "ES256":
        if not (
            isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
        ):
            raise SigningKeyError("ES256 needs a P-256 elliptic-curve private key")
    elif algorithm == "EdDSA" and not isinstance(
        key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        raise SigningKeyError("EdDSA needs an Ed25519 or Ed448 private key")
