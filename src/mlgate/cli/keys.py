"""``mlgate keys``: create, list and revoke API keys directly in the configured database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import orjson
from rich.console import Console
from rich.table import Table

from mlgate.auth.accounts import Accounts, CreatedKey
from mlgate.auth.scopes import SCOPES
from mlgate.auth.views import key_view
from mlgate.cli.db import run_with_accounts


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@click.option("--user", "username", required=True, help="Owner of the key.")
@click.option("--name", required=True, help="What the key is for, e.g. 'billing-service'.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(list(SCOPES)),
    help="A scope (repeat for several; default: all of the owner's).",
)
@click.option("--tier", help="Tier (default: the owner's).")
@click.option(
    "--expires-in-days", type=click.FloatRange(min=0, min_open=True), help="Expire after N days."
)
def keys_create(
    username: str,
    name: str,
    scopes: tuple[str, ...],
    tier: str | None,
    expires_in_days: float | None,
) -> None:
    """Create a key and print it, once: only its hash is stored.

    The key alone goes to stdout (`KEY=$(mlgate keys create ...)`), the rest to stderr.
    """
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None

    async def work(accounts: Accounts) -> CreatedKey:
        user = await accounts.find_user(username)
        return await accounts.create_key(
            user.id, name=name, scopes=scopes or None, tier=tier, expires_at=expires_at
        )

    created = run_with_accounts(work)
    key = created.key
    click.echo(
        f"created API key {key.id} ({key.prefix}) for {created.username!r}, scopes "
        f"{' '.join(key.scopes) or '(none)'}, tier {key.tier}"
        + (f", expires {key.expires_at.isoformat()}" if key.expires_at else "")
        + ". It is shown once, now:",
        err=True,
    )
    click.echo(created.plaintext)


@keys_group.command("list")
@click.option("--user", "username", help="Only this user's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(username: str | None, as_json: bool) -> None:
    """List keys (never the keys themselves: they are not stored)."""

    async def work(accounts: Accounts) -> list[dict[str, object]]:
        user_id = (await accounts.find_user(username)).id if username else None
        return [key_view(k, u) for k, u in await accounts.list_keys(user_id=user_id)]

    views = run_with_accounts(work)
    if as_json:
        click.echo(orjson.dumps(views, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table()
    for column in ("id", "prefix", "name", "user", "scopes", "tier", "status", "expires", "used"):
        table.add_column(column)
    for v in views:
        table.add_row(
            str(v["id"]),
            str(v["prefix"]),
            str(v["name"]),
            str(v["username"]),
            " ".join(v["scopes"]),  # type: ignore[arg-type]
            str(v["tier"]),
            str(v["status"]),
            str(v["expires_at"] or ""),
            str(v["last_used_at"] or "never"),
        )
    Console().print(table)


@keys_group.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke KEY (its id or prefix, as `keys list` shows): refused at once everywhere."""

    async def work(accounts: Accounts) -> tuple[int, str]:
        found = await accounts.get_key(int(key)) if key.isdigit() else await accounts.find_key(key)
        revoked, _ = await accounts.revoke_key(found[0].id)
        return revoked.id, revoked.prefix

    key_id, prefix = run_with_accounts(work)
    click.echo(f"revoked API key {key_id} ({prefix})")
