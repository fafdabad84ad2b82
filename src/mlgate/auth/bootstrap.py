"""First start of the embedded default: an admin user and key, the key printed once.

There is never a fixed default credential: the key is random, shown on stderr once and
stored hashed. The admin user has no password (it logs in with keys); give it one with
`mlgate users set-password admin`, and make more keys with `mlgate keys create`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from mlgate.auth.accounts import Accounts
from mlgate.auth.scopes import ADMIN
from mlgate.errors import Conflict

log = logging.getLogger("mlgate.auth")


async def bootstrap_admin(
    accounts: Accounts, username: str = "admin", tier: str | None = None
) -> str | None:
    """Create the first admin and key when there are no users; returns the key, once.

    ``tier``: the admin's tier (the composition root passes the most generous one, so
    that the operator trying the API is not held to the free tier's 10 requests a minute).
    """
    if await accounts.count_users() > 0:
        return None
    try:
        user = await accounts.create_user(username, password=None, scopes=[ADMIN], tier=tier)
    except Conflict:
        return None  # another worker starting at the same moment won
    created = await accounts.create_key(user.id, name="bootstrap")
    log.warning(
        "created the first admin user and API key (printed once on stderr)",
        extra={"username": user.username, "key_prefix": created.key.prefix},
    )
    return created.plaintext


def announce_key(plaintext: str, username: str, stream: TextIO | None = None) -> None:
    """The one time the bootstrap key is shown; it is not in any log record."""
    out = stream if stream is not None else sys.stderr
    out.write(
        "\n"
        "================================================================================\n"
        f"  mlgate created the admin user {username!r} and this admin API key.\n"
        "  It is shown ONCE and stored only as a hash: copy it now.\n\n"
        f"      {plaintext}\n\n"
        "  Use it as `X-API-Key: <key>` or `Authorization: Bearer <key>`.\n"
        "  More keys: `mlgate keys create --user admin --name <name>`;\n"
        "  a password for /v1/token: `mlgate users set-password admin`.\n"
        "================================================================================\n"
        "\n"
    )
    out.flush()
