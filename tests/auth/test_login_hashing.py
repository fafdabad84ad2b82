"""Logging in costs one argon2 verification whatever the username, so that a wrong
username cannot be told from a wrong password by timing. Counted, not timed."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.auth.conftest import PASSWORD, Harness


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 verified a password against, in order (the real verification
    still runs)."""
    seen: list[str] = []
    real = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: Any, password: Any) -> Any:
        seen.append(hash if isinstance(hash, str) else hash.decode())
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return seen


async def _login(harness: Harness, username: str, password: str) -> int:
    response = await harness.client.post(
        "/v1/token", data={"username": username, "password": password}
    )
    return response.status_code


async def test_unknown_username_still_costs_one_verification(
    harness: Harness, verifications: list[str]
) -> None:
    await harness.user("alice")
    assert await _login(harness, "nobody", PASSWORD) == 401
    assert len(verifications) == 1
    assert verifications[0].startswith("$argon2id$")


async def test_every_failed_login_costs_the_same_one_verification(
    harness: Harness, verifications: list[str]
) -> None:
    await harness.user("alice")
    await harness.user("robot", password=None)
    attempts = [
        ("alice", PASSWORD, 200),
        ("alice", "wrong password!", 401),
        ("nobody", PASSWORD, 401),
        ("robot", "anything-at-all", 401),  # a user without a password
    ]
    for username, password, status in attempts:
        before = len(verifications)
        assert await _login(harness, username, password) == status, username
        assert len(verifications) - before == 1, username
    # The dummy hash has the parameters of real ones: same cost per verification.
    real, _, unknown, no_password = verifications
    assert unknown == no_password != real
    assert unknown.split("$")[:4] == real.split("$")[:4]
