"""The admin API for users and keys: create, list, get, update, revoke; the error envelopes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mlgate.auth.accounts import Accounts
from mlgate.auth.passwords import Passwords
from mlgate.db.engine import session_factory
from mlgate.errors import ValidationFailed
from tests.auth.conftest import PASSWORD, Harness, api_key

KEY = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
async def admin(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The harness's client, holding an admin key."""
    harness.client.headers.update(api_key(await harness.key(await harness.user("root", ["admin"]))))
    yield harness.client


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"] and body["request_id"]
    return dict(body)


async def test_create_get_list_and_update_a_user(admin: httpx.AsyncClient) -> None:
    created = await admin.post(
        "/v1/admin/users",
        json={"username": "Bob", "password": PASSWORD, "scopes": ["predict"], "tier": "pro"},
    )
    assert created.status_code == 201
    bob = created.json()
    assert bob["username"] == "bob" and bob["tier"] == "pro" and bob["has_password"]
    assert "password" not in bob and "password_hash" not in bob
    assert (await admin.get(f"/v1/admin/users/{bob['id']}")).json() == bob
    names = [u["username"] for u in (await admin.get("/v1/admin/users")).json()]
    assert names == ["root", "bob"]
    assert [u["username"] for u in (await admin.get("/v1/admin/users?offset=1")).json()] == ["bob"]
    changed = await admin.patch(
        f"/v1/admin/users/{bob['id']}",
        json={"tier": "enterprise", "scopes": ["predict", "feedback"], "disabled": True},
    )
    assert changed.status_code == 200
    assert changed.json()["tier"] == "enterprise" and changed.json()["disabled"] is True
    assert changed.json()["scopes"] == ["feedback", "predict"]


async def test_rate_limit_overrides_are_set_and_cleared(admin: httpx.AsyncClient) -> None:
    user = (await admin.post("/v1/admin/users", json={"username": "carol"})).json()
    assert user["has_password"] is False
    path = f"/v1/admin/users/{user['id']}"
    set_ = await admin.patch(path, json={"rate_limit_overrides": {"requests_per_minute": 5}})
    assert set_.json()["rate_limit_overrides"] == {"requests_per_minute": 5}
    assert (await admin.patch(path, json={"tier": "pro"})).json()["rate_limit_overrides"]
    cleared = await admin.patch(path, json={"rate_limit_overrides": None})
    assert cleared.json()["rate_limit_overrides"] is None


async def test_password_change_through_the_api(admin: httpx.AsyncClient, harness: Harness) -> None:
    user = (await admin.post("/v1/admin/users", json={"username": "dave"})).json()
    await admin.patch(f"/v1/admin/users/{user['id']}", json={"password": "a new password"})
    assert await harness.login("dave", "a new password")


async def test_user_errors(admin: httpx.AsyncClient) -> None:
    await admin.post("/v1/admin/users", json={"username": "erin"})
    error(await admin.post("/v1/admin/users", json={"username": "ERIN"}), 409, "conflict")
    for body in (
        {"username": "x", "scopes": ["root"]},
        {"username": "x", "tier": "platinum"},
        {"username": "x", "password": "short"},
        {"username": "has space"},
        {"username": "x", "surprise": 1},
        {"username": "x", "rate_limit_overrides": {"rpm": "many"}},
        {"username": "x", "rate_limit_overrides": {"rpm": -1}},
    ):
        error(await admin.post("/v1/admin/users", json=body), 422, "validation_error")
    error(await admin.get("/v1/admin/users/999"), 404, "not_found")
    error(await admin.patch("/v1/admin/users/999", json={"tier": "pro"}), 404, "not_found")
    error(await admin.get("/v1/admin/users/abc"), 422, "validation_error")


async def test_create_a_key_shown_once(admin: httpx.AsyncClient) -> None:
    user = (
        await admin.post("/v1/admin/users", json={"username": "frank", "scopes": ["predict"]})
    ).json()
    created = await admin.post("/v1/admin/api-keys", json={"username": "frank", "name": "ci"})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    assert KEY.fullmatch(body["key"])
    assert body["scopes"] == ["predict"] and body["tier"] == "free" and body["status"] == "active"
    assert body["user_id"] == user["id"] and body["key"].startswith(f"mlg_{body['prefix']}_")
    # Never again: not in the key, not in listings.
    again = await admin.get(f"/v1/admin/api-keys/{body['id']}")
    listed = await admin.get("/v1/admin/api-keys", params={"user_id": user["id"]})
    for response in (again, listed):
        assert body["key"] not in response.text and "key_hash" not in response.text
    assert [k["id"] for k in listed.json()] == [body["id"]]
    me = await admin.get("/v1/users/me", headers=api_key(body["key"]))
    assert me.json()["key_id"] == body["id"]


async def test_update_and_revoke_a_key(admin: httpx.AsyncClient) -> None:
    user = (
        await admin.post(
            "/v1/admin/users", json={"username": "gina", "scopes": ["predict", "models:read"]}
        )
    ).json()
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = (
        await admin.post(
            "/v1/admin/api-keys",
            json={
                "user_id": user["id"],
                "name": "batch",
                "scopes": ["predict"],
                "expires_at": expires,
            },
        )
    ).json()
    assert key["expires_at"]
    path = f"/v1/admin/api-keys/{key['id']}"
    changed = await admin.patch(
        path, json={"name": "nightly", "tier": "pro", "scopes": ["models:read"], "expires_at": None}
    )
    assert changed.status_code == 200
    assert changed.json()["name"] == "nightly" and changed.json()["tier"] == "pro"
    assert changed.json()["scopes"] == ["models:read"] and changed.json()["expires_at"] is None
    revoked = await admin.delete(path)
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    again = await admin.delete(path)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    error(await admin.patch(path, json={"name": "back"}), 409, "conflict")
    assert (await admin.get("/v1/users/me", headers=api_key(key["key"]))).status_code == 401


async def test_key_errors(admin: httpx.AsyncClient) -> None:
    await admin.post("/v1/admin/users", json={"username": "hank", "scopes": ["predict"]})
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for body in (
        {"name": "no owner"},
        {"user_id": 1, "username": "hank", "name": "both owners"},
        {"username": "hank", "name": "too much", "scopes": ["admin"]},
        {"username": "hank", "name": "unknown scope", "scopes": ["root"]},
        {"username": "hank", "name": "bad tier", "tier": "gold"},
        {"username": "hank", "name": "past", "expires_at": past},
        {"username": "hank", "name": "naive", "expires_at": "2999-01-01T00:00:00"},
        {"username": "hank", "name": ""},
    ):
        error(await admin.post("/v1/admin/api-keys", json=body), 422, "validation_error")
    error(
        await admin.post("/v1/admin/api-keys", json={"username": "nobody", "name": "k"}),
        404,
        "not_found",
    )
    error(
        await admin.post("/v1/admin/api-keys", json={"user_id": 999, "name": "k"}), 404, "not_found"
    )
    for method in ("GET", "DELETE"):
        error(await admin.request(method, "/v1/admin/api-keys/999"), 404, "not_found")
    error(await admin.patch("/v1/admin/api-keys/999", json={"name": "x"}), 404, "not_found")


async def test_an_admin_key_may_carry_any_scope(admin: httpx.AsyncClient) -> None:
    created = await admin.post(
        "/v1/admin/api-keys", json={"username": "root", "name": "ops", "scopes": ["feedback"]}
    )
    assert created.status_code == 201 and created.json()["scopes"] == ["feedback"]


async def test_rate_limit_overrides_can_be_checked_before_they_are_stored(
    harness: Harness,
) -> None:
    """The composition root may hand Accounts the rate limiter's own validation."""

    def known_fields_only(overrides: Any) -> None:
        if unknown := set(overrides) - {"requests_per_minute", "rows_per_minute"}:
            raise ValueError(f"unknown rate-limit fields {sorted(unknown)}")

    settings = harness.settings.auth
    accounts = Accounts(
        settings,
        session_factory(harness.app.state.mlgate.engine),
        Passwords(settings),
        check_overrides=known_fields_only,
    )
    user = await accounts.create_user(
        "ivy", password=None, rate_limit_overrides={"rows_per_minute": 9}
    )
    with pytest.raises(ValidationFailed, match="unknown rate-limit fields"):
        await accounts.update_user(user.id, rate_limit_overrides={"rpm": 1})
    with pytest.raises(ValidationFailed, match="unknown rate-limit fields"):
        await accounts.create_key(user.id, name="k", rate_limit_overrides={"rpm": 1})


@pytest.mark.parametrize(
    "overrides",
    [
        {"requests_per_minute": 10**30},
        {"rows_per_minute": 10**30},
        {"burst": 10**19},
        {"requests_per_minute": 1.5},
        {"rows_per_minute": 1e300},
        # Fine alone, but a bucket that takes centuries to drain is not a limit.
        {"requests_per_minute": 1, "burst": 10**9},
    ],
)
async def test_out_of_range_overrides_are_422_and_never_stored(
    admin: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    user = (await admin.post("/v1/admin/users", json={"username": "olga"})).json()
    key = (await admin.post("/v1/admin/api-keys", json={"username": "olga", "name": "k"})).json()
    for path in (f"/v1/admin/users/{user['id']}", f"/v1/admin/api-keys/{key['id']}"):
        response = await admin.patch(path, json={"rate_limit_overrides": overrides})
        body = error(response, 422, "validation_error")
        assert body["details"][0]["field"] == "rate_limit_overrides"
    created = await admin.post(
        "/v1/admin/users", json={"username": "pete", "rate_limit_overrides": overrides}
    )
    error(created, 422, "validation_error")
    # Nothing was stored: every listing still answers.
    assert (await admin.get("/v1/admin/users")).status_code == 200
    assert (await admin.get("/v1/admin/api-keys")).status_code == 200
    assert (await admin.get(f"/v1/admin/users/{user['id']}")).json()["rate_limit_overrides"] is None


@pytest.mark.parametrize("big", [2**31, 2**63, 2**64, 10**30])
async def test_ids_beyond_the_column_range_are_404_never_500(
    admin: httpx.AsyncClient, big: int
) -> None:
    for method, path in (
        ("GET", f"/v1/admin/users/{big}"),
        ("PATCH", f"/v1/admin/users/{big}"),
        ("GET", f"/v1/admin/api-keys/{big}"),
        ("PATCH", f"/v1/admin/api-keys/{big}"),
        ("DELETE", f"/v1/admin/api-keys/{big}"),
    ):
        body = {"name": "x"} if "api-keys" in path else {"tier": "pro"}
        response = await admin.request(method, path, json=None if method != "PATCH" else body)
        error(response, 404, "not_found")
    error(
        await admin.post("/v1/admin/api-keys", json={"user_id": big, "name": "k"}), 404, "not_found"
    )
    listed = await admin.get("/v1/admin/api-keys", params={"user_id": big})
    assert listed.status_code == 200 and listed.json() == []
    error(await admin.get("/v1/admin/users", params={"offset": big}), 422, "validation_error")
    for path in (f"/v1/admin/users/-{big}", "/v1/admin/users/0"):
        error(await admin.get(path), 404, "not_found")
