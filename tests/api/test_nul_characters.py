"""NUL characters, which PostgreSQL refuses in any text, are refused by the API the same
way on every database (found by generated requests against a PostgreSQL server: a
``%00`` in a usage or quality filter was a 500, in a login name a 503)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import literal, select, text
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from mlgate.db.engine import build_engine
from tests.conftest import make_settings, running_app

URLS = [
    "/v1/admin/usage?principal=%00x",
    "/v1/models/ids/quality?version=3%00",
    "/v1/predictions?model=ids%00",
    "/v1/models/ids%00x",
    "/v2/models/ids%00/ready",
]


async def test_a_nul_in_the_url_is_a_400(database: dict[str, Any]) -> None:
    async with running_app(make_settings(**database), as_admin=True) as (_, client):
        for url in URLS:
            response = await client.get(url)
            assert response.status_code == 400, (url, response.text)
            error = response.json()["error"]  # /v2: the protocol's {"error": "message"}
            assert "NUL" in (error if isinstance(error, str) else error["message"]), url


async def test_a_login_name_with_a_nul_is_refused_as_any_unknown_name(
    database: dict[str, Any],
) -> None:
    async with running_app(make_settings(**database)) as (_, client):
        response = await client.post("/v1/token", data={"username": "ad\x00min", "password": "x"})
        assert response.status_code == 401, response.text
        assert response.json()["error"]["message"] == "incorrect username or password"


async def test_a_key_name_must_be_printable(database: dict[str, Any]) -> None:
    async with running_app(make_settings(**database), as_admin=True) as (_, client):
        user = (await client.post("/v1/admin/users", json={"username": "bot"})).json()
        response = await client.post(
            "/v1/admin/api-keys", json={"user_id": user["id"], "name": "ci\x00bot"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == "name"


async def test_a_value_postgresql_refuses_is_a_422_not_a_500(database: dict[str, Any]) -> None:
    """Whatever reaches PostgreSQL that it refuses as data (SQLSTATE class 22) is the
    request's fault: the error handler says so (the real driver error, raised by a
    route of the app under test)."""
    if database["database_url"].startswith("sqlite"):
        pytest.skip("SQLite stores NUL characters")
    settings = make_settings(**database)
    engine = build_engine(settings)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as refused:
                await connection.execute(select(literal("a\x00b")))
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as bug:  # a statement PostgreSQL cannot parse
                await connection.execute(text("SELEC 1"))
    finally:
        await engine.dispose()
    async with running_app(settings) as (app, client):
        for path, error in (("/refused", refused.value), ("/bug", bug.value)):

            async def route(request: Request, error: Exception = error) -> None:
                raise error

            app.add_route(path, route)
        response = await client.get("/refused")
        assert response.status_code == 422, response.text
        (detail,) = response.json()["error"]["details"]
        assert detail["sqlstate"] == "22021"
        # Any other driver error is a bug: the generic 500, with the request id.
        response = await client.get("/bug")
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
