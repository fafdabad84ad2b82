"""``mlgate users``: manage users directly in the configured database."""

from __future__ import annotations

import sys

import click
import orjson
from rich.console import Console
from rich.table import Table

from mlgate.auth.accounts import Accounts
from mlgate.auth.scopes import ADMIN, SCOPES
from mlgate.auth.views import user_view
from mlgate.cli.db import run_with_accounts
from mlgate.db.models import User


def read_password(from_stdin: bool) -> str:
    """A new password from stdin (scripts) or a hidden, confirmed prompt; never an argument,
    which would stay in the shell history and the process list."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group("users")
def users_group() -> None:
    """Create, list and disable users."""


@users_group.command("create")
@click.argument("username")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(list(SCOPES)),
    help="A scope (repeat for several).",
)
@click.option("--admin", is_flag=True, help="Give the admin scope (implies every scope).")
@click.option("--tier", help="Tier (default: MLGATE_AUTH__DEFAULT_TIER).")
@click.option("--no-password", is_flag=True, help="No password: the user uses API keys only.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--tenant", help="A group whose members share device baselines.")
def users_create(
    username: str,
    scopes: tuple[str, ...],
    admin: bool,
    tier: str | None,
    no_password: bool,
    password_stdin: bool,
    tenant: str | None,
) -> None:
    """Create USERNAME (asks for a password unless --no-password)."""
    password = None if no_password else read_password(password_stdin)
    wanted = [*scopes, ADMIN] if admin else list(scopes)

    async def work(accounts: Accounts) -> User:
        return await accounts.create_user(
            username, password=password, scopes=wanted, tier=tier, tenant=tenant
        )

    user = run_with_accounts(work)
    click.echo(
        f"created user {user.username!r} (id {user.id}, tier {user.tier}, scopes "
        f"{' '.join(user.scopes) or '(none)'})"
    )


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_list(as_json: bool) -> None:
    """List users."""

    async def work(accounts: Accounts) -> list[User]:
        return await accounts.list_users(limit=100_000)

    views = [user_view(u) for u in run_with_accounts(work)]
    if as_json:
        click.echo(orjson.dumps(views, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table()
    for column in ("id", "username", "tier", "scopes", "password", "status", "created"):
        table.add_column(column)
    for v in views:
        table.add_row(
            str(v["id"]),
            v["username"],
            v["tier"],
            " ".join(v["scopes"]),
            "yes" if v["has_password"] else "no",
            "disabled" if v["disabled"] else "active",
            v["created_at"],
        )
    Console().print(table)


def _set_disabled(username: str, disabled: bool) -> User:
    async def work(accounts: Accounts) -> User:
        user = await accounts.find_user(username)
        return await accounts.update_user(user.id, disabled=disabled)

    return run_with_accounts(work)


@users_group.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Disable USERNAME: their tokens and API keys are refused at once (403)."""
    user = _set_disabled(username, True)
    click.echo(f"disabled user {user.username!r}")


@users_group.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Enable USERNAME again."""
    user = _set_disabled(username, False)
    click.echo(f"enabled user {user.username!r}")


@users_group.command("revoke-sessions")
@click.argument("username")
def users_revoke_sessions(username: str) -> None:
    """Refuse every access token USERNAME holds now (at once, on every server); API keys
    are not affected."""

    async def work(accounts: Accounts) -> User:
        user = await accounts.find_user(username)
        return await accounts.revoke_sessions(user.id)

    user = run_with_accounts(work)
    click.echo(f"revoked every access token of {user.username!r}; they must log in again")


@users_group.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set USERNAME's password (for `POST /v1/token`); tokens issued before are refused."""
    password = read_password(password_stdin)

    async def work(accounts: Accounts) -> User:
        user = await accounts.find_user(username)
        return await accounts.update_user(user.id, password=password)

    user = run_with_accounts(work)
    click.echo(f"password of {user.username!r} changed")
