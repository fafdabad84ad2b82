"""Passwords and keys never appear in the database, the logs, or responses after creation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mlgate.logs import JSONFormatter
from tests.auth.conftest import Harness, api_key, bearer

PASSWORD = "s3cret-Pa55word-that-must-not-leak"


async def database_dump(harness: Harness, database: dict[str, Any]) -> bytes:
    """Every byte the database holds about users and keys."""
    engine = harness.app.state.mlgate.engine
    if engine.dialect.name == "sqlite":
        await engine.dispose()  # checkpoint the WAL into the file
        db_file = Path(database["database_url"].split("///", 1)[1])
        return b"".join(p.read_bytes() for p in db_file.parent.iterdir() if p.is_file())
    async with engine.connect() as conn:
        rows = []
        for table in ("users", "api_keys"):
            result = await conn.execute(text(f"SELECT * FROM {table}"))
            rows += [repr(tuple(row)) for row in result]
    return "\n".join(rows).encode()


async def test_no_secret_in_database_logs_or_later_responses(
    harness: Harness, database: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = harness.client
    root_key = await harness.key(await harness.user("root", ["admin"]))
    admin = api_key(root_key)
    created = await client.post(
        "/v1/admin/users",
        json={"username": "zoe", "password": PASSWORD, "scopes": ["predict", "models:read"]},
        headers=admin,
    )
    assert created.status_code == 201 and PASSWORD not in created.text
    key_response = await client.post(
        "/v1/admin/api-keys", json={"username": "zoe", "name": "app"}, headers=admin
    )
    key = key_response.json()["key"]
    secret_part = key.split("_", 2)[2]
    token = await harness.login("zoe", PASSWORD)
    later = [
        await client.get("/v1/users/me", headers=api_key(key)),
        await client.get("/v1/users/me", headers=bearer(token)),
        await client.get("/v1/admin/users", headers=admin),
        await client.get("/v1/admin/api-keys", headers=admin),
        await client.get(f"/v1/admin/api-keys/{key_response.json()['id']}", headers=admin),
        # Failures must not echo what was sent either.
        await client.get("/v1/users/me", headers=api_key(key[:-1] + "x")),
        await client.post("/v1/token", data={"username": "zoe", "password": PASSWORD + "!"}),
    ]
    for response in later:
        for secret in (PASSWORD, key, secret_part, root_key):
            assert secret not in response.text, response.request.url

    formatter = JSONFormatter()
    logged = "\n".join(formatter.format(record) for record in caplog.records) + caplog.text
    dumped = await database_dump(harness, database)
    for secret in (PASSWORD, key, secret_part, root_key, root_key.split("_", 2)[2]):
        assert secret not in logged
        assert secret.encode() not in dumped
    assert b"argon2id" in dumped  # the password is there, hashed
