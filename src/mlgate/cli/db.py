"""``mlgate db``: migrations; and the helper the users/keys commands run their work with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.auth.accounts import Accounts
from mlgate.auth.passwords import Passwords
from mlgate.auth.principal_cache import account_changes
from mlgate.db.engine import build_engine, safe_url, session_factory
from mlgate.db.migrate import (
    current_revision,
    downgrade,
    head_revision,
    known_revisions,
    upgrade,
)
from mlgate.errors import MlgateError
from mlgate.settings import Settings

T = TypeVar("T")


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        raise click.UsageError(f"invalid configuration: {exc}") from None


def run_with_engine(work: Callable[[Settings, AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database; errors become one-line CLI errors."""
    settings = load_settings()

    async def main() -> T:
        engine = build_engine(settings)
        try:
            return await work(settings, engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except MlgateError as exc:
        raise click.ClickException(exc.message) from None
    except (SQLAlchemyError, OSError) as exc:
        raise click.ClickException(
            f"database {safe_url(settings.database_url)} failed: {exc}"
        ) from None


def run_with_accounts(work: Callable[[Accounts], Awaitable[T]]) -> T:
    """Run ``work`` with the account service, migrating first unless auto-migrate is off."""

    async def with_accounts(settings: Settings, engine: AsyncEngine) -> T:
        if settings.database.auto_migrate:
            await upgrade(engine, schema=settings.database.schema_name)
        # Running servers clear their cached principals when told (with Redis), or
        # within their cache's TTL.
        changes = account_changes(settings.redis_url)
        accounts = Accounts(
            settings.auth,
            session_factory(engine),
            Passwords(settings.auth),
            check_overrides=settings.rate_limit.check_overrides,
            on_change=changes.publish,
        )
        try:
            return await work(accounts)
        finally:
            await changes.close()

    return run_with_engine(with_accounts)


@click.group("db")
def db_group() -> None:
    """Database migrations (MLGATE_DATABASE_URL)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply pending migrations (the server also does this on start unless
    MLGATE_DATABASE__AUTO_MIGRATE=false)."""

    async def work(settings: Settings, engine: AsyncEngine) -> str | None:
        return await upgrade(engine, schema=settings.database.schema_name, revision=revision)

    reached = run_with_engine(work)
    click.echo(f"database at revision {reached} (newest shipped: {head_revision()})")


@db_group.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one this mlgate ships."""

    async def work(_settings: Settings, engine: AsyncEngine) -> str | None:
        return await current_revision(engine)

    current = run_with_engine(work)
    head = head_revision()
    if current == head:
        state = "up to date"
    elif current is None or current in known_revisions():
        state = "run `mlgate db upgrade`"
    else:
        state = "migrated by a newer mlgate: run that version, or downgrade with it"
    click.echo(f"database at revision {current or '(none)'}; newest shipped: {head} ({state})")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Take the database back to REVISION (before rolling back to an older mlgate: run
    this with the version that migrated it; `mlgate db current` shows both). What the
    newer migrations added is dropped or folded back, as each one's downgrade says."""

    async def work(_settings: Settings, engine: AsyncEngine) -> str | None:
        return await downgrade(engine, revision=revision)

    reached = run_with_engine(work)
    click.echo(f"database at revision {reached or '(none)'} (newest shipped: {head_revision()})")
