"""`mlgate users`, `mlgate keys` and `mlgate db`, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from mlgate.cli.main import cli
from mlgate.db.engine import build_engine
from mlgate.db.migrate import head_revision
from mlgate.errors import SchemaTooNew
from tests.auth.conftest import api_key
from tests.conftest import make_settings, running_app

KEY = re.compile(r"^mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return result


async def arun(*args: str) -> Result:
    """``run`` from an async test: the CLI runs its own event loop, so in a thread."""
    return await asyncio.to_thread(run, *args)


async def aok(*args: str) -> Result:
    return await asyncio.to_thread(ok, *args)


def test_db_upgrade_and_current(database_env: dict[str, Any]) -> None:
    assert "(none)" in ok("db", "current").output
    assert f"revision {head_revision()}" in ok("db", "upgrade").output
    assert "up to date" in ok("db", "current").output
    assert f"revision {head_revision()}" in ok("db", "upgrade").output


def test_users_create_list_disable(database_env: dict[str, Any]) -> None:
    out = ok(
        "users",
        "create",
        "Alice",
        "--scope",
        "predict",
        "--password-stdin",
        input="a long password\n",
    ).output
    assert "created user 'alice'" in out and "a long password" not in out
    ok("users", "create", "ops", "--admin", "--tier", "pro", "--no-password")
    ok(
        "users",
        "create",
        "bob",
        "--scope",
        "models:read",
        input="another password\nanother password\n",
    )
    users = {u["username"]: u for u in json.loads(ok("users", "list", "--json").output)}
    assert users["alice"]["scopes"] == ["predict"] and users["alice"]["has_password"]
    assert users["ops"]["scopes"] == ["admin"] and users["ops"]["tier"] == "pro"
    assert not users["ops"]["has_password"]
    assert "a long password" not in ok("users", "list").output
    ok("users", "disable", "alice")
    assert json.loads(ok("users", "list", "--json").output)[0]["disabled"] is True
    ok("users", "enable", "alice")
    ok("users", "set-password", "ops", "--password-stdin", input="ops password 123\n")
    # A tenant: its members share device baselines (tests/devices/test_owners.py).
    ok("users", "create", "tess", "--no-password", "--tenant", "acme")
    users = {u["username"]: u for u in json.loads(ok("users", "list", "--json").output)}
    assert users["tess"]["tenant"] == "acme" and users["bob"]["tenant"] is None
    bad = run("users", "create", "tom", "--no-password", "--tenant", "Not Valid")
    assert bad.exit_code == 1 and "tenant" in bad.output


def test_user_errors_are_one_line(database_env: dict[str, Any]) -> None:
    ok("users", "create", "carol", "--no-password")
    duplicate = run("users", "create", "carol", "--no-password")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    short = run("users", "create", "dan", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "password" in short.output
    missing = run("users", "disable", "nobody")
    assert missing.exit_code == 1 and "no user named 'nobody'" in missing.output
    assert "Traceback" not in duplicate.output + short.output + missing.output


async def test_keys_create_list_revoke(
    database_env: dict[str, Any], tmp_path: Any, redis_url: str, monkeypatch: Any
) -> None:
    # The CLI announces account changes over Redis, as a production set-up would.
    monkeypatch.setenv("MLGATE_REDIS_URL", redis_url)
    await aok(
        "users", "create", "svc", "--scope", "predict", "--scope", "models:read", "--no-password"
    )
    created = await aok(
        "keys", "create", "--user", "svc", "--name", "billing", "--scope", "models:read",
        "--expires-in-days", "30",
    )  # fmt: skip
    key = created.stdout.strip()
    assert KEY.match(key), created.stdout  # the key alone on stdout, for scripts
    assert "shown once" in created.stderr and key not in created.stderr
    listing = (await aok("keys", "list", "--json")).output
    listed = json.loads(listing)
    assert [(k["name"], k["status"], k["scopes"]) for k in listed] == [
        ("billing", "active", ["models:read"])
    ]
    assert key not in listing and key not in (await aok("keys", "list")).output
    too_much = await arun("keys", "create", "--user", "svc", "--name", "x", "--scope", "admin")
    assert too_much.exit_code == 1 and "cannot exceed its owner" in too_much.output

    # A key made by the CLI works against a server on the same database...
    settings = make_settings(
        **database_env,
        models={"repository": tmp_path / "none"},
        auth={"anonymous_enabled": False, "principal_cache_ttl_s": 60},
        redis_url=redis_url,
    )
    async with running_app(settings) as (app, client):
        await asyncio.wait_for(app.state.mlgate.account_changes.listening.wait(), 5)
        assert (await client.get("/v1/models", headers=api_key(key))).status_code == 200
        # ...and revoking it by prefix (or id) refuses it at once, though the server
        # caches verified keys (the CLI's announcement clears the cache).
        revoked = await aok("keys", "revoke", listed[0]["prefix"])
        assert "revoked API key" in revoked.output
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if (await client.get("/v1/models", headers=api_key(key))).status_code != 200:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/v1/models", headers=api_key(key))).status_code == 401
    assert json.loads((await aok("keys", "list", "--json")).output)[0]["status"] == "revoked"
    await aok("keys", "revoke", str(listed[0]["id"]))
    assert (await arun("keys", "revoke", "999")).exit_code == 1


def _set_revision(database: dict[str, Any], revision: str) -> None:
    """Write ``revision`` into the database's alembic_version, as another mlgate would."""
    settings = make_settings(**database)

    async def write() -> None:
        engine = build_engine(settings)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
                )
        finally:
            await engine.dispose()

    asyncio.run(write())


def test_db_downgrade_and_back(database_env: dict[str, Any]) -> None:
    """Before rolling back to an older mlgate, the newer one takes the database back;
    `db current` then says an upgrade is due, and `db upgrade` brings it to head again."""
    ok("db", "upgrade")
    assert "database at revision 0006" in ok("db", "downgrade", "0006").output
    assert "0006" in (out := ok("db", "current").output) and "run `mlgate db upgrade`" in out
    assert f"revision {head_revision()}" in ok("db", "upgrade").output
    refused = run("db", "downgrade", "nosuch")
    assert refused.exit_code == 1 and "cannot downgrade to 'nosuch'" in refused.output
    assert "Traceback" not in refused.output


def test_a_database_migrated_by_a_newer_mlgate_is_refused_clearly(
    database_env: dict[str, Any],
) -> None:
    """A database at a revision this mlgate does not ship (a newer one migrated it): the
    CLI and the server refuse it with a message naming both revisions and the way out,
    instead of Alembic's 'Can't locate revision'."""
    ok("db", "upgrade")
    _set_revision(database_env, "9999")
    assert "migrated by a newer mlgate" in ok("db", "current").output
    for command in (("db", "upgrade"), ("db", "downgrade", "0006")):
        refused = run(*command)
        assert refused.exit_code == 1, refused.output
        assert "schema revision 9999" in refused.output and head_revision() in refused.output
        assert f"mlgate db downgrade {head_revision()}" in refused.output
        assert "Traceback" not in refused.output

    async def start(auto_migrate: bool) -> None:
        settings = make_settings(**database_env)
        settings.database.auto_migrate = auto_migrate
        async with running_app(settings):
            raise AssertionError("the server started on a database it does not know")

    for auto_migrate in (True, False):
        with pytest.raises(SchemaTooNew) as refused_start:
            asyncio.run(start(auto_migrate))
        details = {"database_revision": "9999", "newest_shipped": head_revision()}
        assert refused_start.value.details == details
