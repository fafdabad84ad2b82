"""The first start of the embedded default creates an admin and prints its key once;
development without a configured secret makes one and keeps it."""

from __future__ import annotations

import asyncio
import logging
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from mlgate.api.app import create_app
from mlgate.settings import Settings
from tests.auth.conftest import api_key, bearer
from tests.conftest import TEST_JWT_SECRET, make_settings, running_app

KEY = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def development(tmp_path: Path, **overrides: Any) -> Settings:
    """The embedded default as a newcomer runs it: development, SQLite, no secret."""
    return make_settings(
        env="development",
        database_url=f"sqlite:///{tmp_path / 'var' / 'mlgate.db'}",
        models={"repository": tmp_path / "no-models"},
        auth={"jwt_secret": None, "anonymous_enabled": False, **overrides},
    )


def test_bootstrap_default_depends_on_environment_and_database() -> None:
    sqlite = "sqlite:///x.db"
    postgres = "postgresql://u@h/db"
    assert Settings(env="development", database_url=sqlite).bootstrap_admin_enabled
    assert not Settings(env="development", database_url=postgres).bootstrap_admin_enabled
    assert not Settings(env="test", database_url=sqlite).bootstrap_admin_enabled
    production = Settings(
        env="production", database_url=sqlite, auth={"jwt_secret": TEST_JWT_SECRET}
    )
    assert not production.bootstrap_admin_enabled


async def test_first_start_prints_an_admin_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = development(tmp_path)
    async with running_app(settings) as (_, client):
        printed = capsys.readouterr().err
        keys = KEY.findall(printed)
        assert len(keys) == 1, printed
        assert "mlgate keys create" in printed
        me = (await client.get("/v1/users/me", headers=api_key(keys[0]))).json()
        assert me["subject"] == "admin" and me["scopes"] == ["admin"]
    assert keys[0] not in caplog.text
    assert keys[0].split("_", 2)[2] not in caplog.text
    async with running_app(settings) as (_, client):
        assert not KEY.search(capsys.readouterr().err)
        assert (await client.get("/v1/users/me", headers=api_key(keys[0]))).status_code == 200


async def test_bootstrap_can_be_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_app(development(tmp_path, bootstrap_admin=False)) as (app, _):
        assert await app.state.mlgate.accounts.count_users() == 0
    assert not KEY.search(capsys.readouterr().err)


async def test_workers_starting_together_create_one_admin(
    database: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        **database,
        models={"repository": tmp_path / "no-models"},
        auth={"bootstrap_admin": True},
    )
    apps = [create_app(settings) for _ in range(3)]

    async def start(app: Any) -> Any:
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        return context

    contexts = await asyncio.gather(*(start(app) for app in apps))
    try:
        assert len(KEY.findall(capsys.readouterr().err)) == 1
        assert await apps[0].state.mlgate.accounts.count_users() == 1
    finally:
        for context in contexts:
            await context.__aexit__(None, None, None)


async def test_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = development(tmp_path)
    secret_file = tmp_path / "var" / "jwt_secret"
    async with running_app(settings) as (app, client):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert len(secret_file.read_bytes().strip()) >= 32
        await app.state.mlgate.accounts.create_user(
            "alice", password="a long password", scopes=["predict"]
        )
        login = await client.post(
            "/v1/token", data={"username": "alice", "password": "a long password"}
        )
        token = login.json()["access_token"]
    first = secret_file.read_bytes()
    async with running_app(settings) as (_, client):
        # A restart keeps the secret, so tokens survive it.
        assert (await client.get("/v1/users/me", headers=bearer(token))).status_code == 200
    assert secret_file.read_bytes() == first
    other = development(tmp_path / "elsewhere")
    async with running_app(other) as (_, client):
        # Another installation has another secret: the token means nothing there.
        assert (await client.get("/v1/users/me", headers=bearer(token))).status_code == 401
