"""Password hashing with argon2id; hashing runs in a worker thread (it is slow on purpose)."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mlgate.errors import ValidationFailed
from mlgate.settings import AuthSettings

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def check_password_policy(password: str) -> None:
    """Refuse passwords that are too short or absurdly long (422)."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            details=[{"field": "password", "message": "bad length"}],
        )


class Passwords:
    """Hashes and verifies passwords; parameters default to argon2-cffi's recommendation."""

    def __init__(self, settings: AuthSettings) -> None:
        defaults = PasswordHasher()
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost or defaults.time_cost,
            memory_cost=settings.argon2_memory_cost_kib or defaults.memory_cost,
            parallelism=settings.argon2_parallelism or defaults.parallelism,
        )
        # Verified against when the user does not exist, so that a wrong username takes
        # as long as a wrong password and does not reveal which usernames exist.
        self._dummy_hash = self._hasher.hash("not a real password")
        # Each hash holds memory_cost KiB (64 MiB by default): a burst of logins must not
        # run forty of them at once in anyio's default thread pool.
        self._concurrency = max(2, os.cpu_count() or 2)
        self._limiter: anyio.CapacityLimiter | None = None

    def _slots(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # made lazily: it belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        return self._limiter

    async def hash(self, password: str) -> str:
        """An argon2id hash (PHC string with its own salt and parameters)."""
        check_password_policy(password)
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._slots())

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; a missing hash still costs one verification."""
        return await anyio.to_thread.run_sync(
            self._verify, stored_hash, password, limiter=self._slots()
        )

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy_hash, password) and (
                stored_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(stored_hash)
