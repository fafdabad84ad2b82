"""The callers of the bench: an enterprise user with one API key loads mlgate, and an
admin key reads ``/health/detailed`` between rounds (how many audit rows were written or
dropped). The load key has no more scopes than a client of the model needs.

The account's rate-limit override (limits are per account: a user and all of its keys)
is high enough never to refuse a request of the bench, so that the limiter does all its
work on every request and is never what stops it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlgate.auth.accounts import Accounts, CreatedKey
from mlgate.cli.db import run_with_accounts

USERNAME = "bench"
ADMIN_USERNAME = "bench-admin"
TIER = "enterprise"
# 60 million a minute is the most the limiter represents (one microsecond per unit):
# a million requests or rows a second, far above what one core serves.
OVERRIDES = {"requests_per_minute": 60_000_000, "rows_per_minute": 60_000_000}


def database_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'mlgate.db'}"


def jwt_secret() -> str:
    """A fresh secret per run: production mode refuses to start without one."""
    return secrets.token_urlsafe(48)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class BenchKeys:
    load: str
    """Sent with every request of the load (scopes ``predict``, ``models:read``)."""
    admin: str
    """Reads ``/health/detailed`` between rounds (scope ``admin``)."""


def create_api_keys(settings: dict[str, str]) -> BenchKeys:
    """Create the bench's users and their keys in the database ``settings`` name."""

    async def work(accounts: Accounts) -> tuple[CreatedKey, CreatedKey]:
        user = await accounts.create_user(
            USERNAME, password=None, scopes=["predict", "models:read"], tier=TIER
        )
        await accounts.update_user(user.id, rate_limit_overrides=OVERRIDES)
        load = await accounts.create_key(user.id, name="bench", tier=TIER)
        admin = await accounts.create_user(ADMIN_USERNAME, password=None, scopes=["admin"])
        return load, await accounts.create_key(admin.id, name="bench-admin")

    with _environment(settings):
        load, admin = run_with_accounts(work)
    return BenchKeys(load.plaintext, admin.plaintext)
