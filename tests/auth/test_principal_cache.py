"""Verified principals are cached per worker: no database round trip per request in the
steady state, and account changes reach every worker within the cache's TTL - at once
when Redis carries the announcements."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from tests.conftest import make_settings, running_app

ROW = {"features": [0.5] * 77}


def shared_db(tmp_path: Path, **auth: Any) -> dict[str, Any]:
    return {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        "auth": {"anonymous_enabled": False, **auth},
    }


@asynccontextmanager
async def two_workers(
    **overrides: Any,
) -> AsyncIterator[tuple[tuple[FastAPI, httpx.AsyncClient], ...]]:
    """Two apps on one database, as two worker processes would be."""
    async with (
        running_app(make_settings(**overrides)) as a,
        running_app(make_settings(**overrides)) as b,
    ):
        yield a, b


async def predict(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/models/ids/predict", json=ROW, headers=headers)


async def new_key(app: FastAPI, name: str = "svc") -> tuple[int, str]:
    accounts = app.state.mlgate.accounts
    user = await accounts.create_user(name, password=None, scopes=["predict"])
    created = await accounts.create_key(user.id, name="k")
    return created.key.id, str(created.plaintext)


async def test_one_database_query_per_credential_not_per_request(tmp_path: Path) -> None:
    async with running_app(make_settings(**shared_db(tmp_path))) as (app, client):
        _, key = await new_key(app)
        statements: list[str] = []
        engine = app.state.mlgate.engine.sync_engine
        listener = lambda *args: statements.append(str(args[2]))  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            for _ in range(20):
                response = await client.post(
                    "/v1/models/ids/predict", json=ROW, headers={"X-API-Key": key}
                )
                assert response.status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
    lookups = [s for s in statements if "api_keys" in s and "SELECT" in s.upper()]
    assert len(lookups) == 1, statements
    assert app.state.mlgate.auth.cache.hits >= 19


async def test_without_redis_a_revocation_reaches_other_workers_within_the_ttl(
    tmp_path: Path,
) -> None:
    ttl = 0.5
    overrides = shared_db(tmp_path, principal_cache_ttl_s=ttl)
    async with two_workers(**overrides) as ((a_app, a), (_, b)):
        key_id, key = await new_key(a_app)
        headers = {"X-API-Key": key}
        assert (
            await b.post("/v1/models/ids/predict", json=ROW, headers=headers)
        ).status_code == 200
        await a_app.state.mlgate.accounts.revoke_key(key_id)
        revoked_at = time.monotonic()
        # At once on the worker that made the change...
        assert (
            await a.post("/v1/models/ids/predict", json=ROW, headers=headers)
        ).status_code == 401
        # ...and within the TTL on the other one.
        while (
            await b.post("/v1/models/ids/predict", json=ROW, headers=headers)
        ).status_code == 200:
            assert time.monotonic() - revoked_at < ttl + 0.5, "still accepted after the TTL"
            await asyncio.sleep(0.05)


async def test_with_redis_changes_reach_every_worker_at_once(
    tmp_path: Path, redis_url: str
) -> None:
    overrides = {**shared_db(tmp_path, principal_cache_ttl_s=60), "redis_url": redis_url}
    async with two_workers(**overrides) as ((a_app, _), (b_app, b)):
        for app in (a_app, b_app):
            await asyncio.wait_for(app.state.mlgate.account_changes.listening.wait(), 5)
        key_id, key = await new_key(a_app, "svc2")
        headers = {"X-API-Key": key}
        assert (
            await b.post("/v1/models/ids/predict", json=ROW, headers=headers)
        ).status_code == 200
        user = (await a_app.state.mlgate.accounts.get_key(key_id))[0].user_id
        await a_app.state.mlgate.accounts.update_user(user, disabled=True)
        started = time.monotonic()
        while (
            await b.post("/v1/models/ids/predict", json=ROW, headers=headers)
        ).status_code == 200:
            # Far inside the 60 s TTL: the announcement cleared B's cache.
            assert time.monotonic() - started < 2.0, "the other worker did not hear the change"
            await asyncio.sleep(0.01)
        response = await b.post("/v1/models/ids/predict", json=ROW, headers=headers)
        assert response.status_code == 403 and "disabled" in response.json()["error"]["message"]


async def test_a_zero_ttl_checks_every_request(tmp_path: Path) -> None:
    async with running_app(make_settings(**shared_db(tmp_path, principal_cache_ttl_s=0))) as (
        app,
        client,
    ):
        _, key = await new_key(app)
        for _ in range(3):
            await client.post("/v1/models/ids/predict", json=ROW, headers={"X-API-Key": key})
        assert len(app.state.mlgate.auth.cache) == 0
