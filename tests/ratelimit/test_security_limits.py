"""Brute-force limits through HTTP (issue 8 items 4, 9 and 10): per-address limits group
IPv6 clients by network, wrong passwords for one username back off exponentially, the
failed-authentication lockout never refuses valid credentials, and all of these hold
while Redis is away."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mlgate.ratelimit import MemoryRateLimiter
from tests.conftest import make_settings, running_app
from tests.ratelimit.conftest import TcpProxy, limited_app

PROXY = {"trusted_proxies": ["127.0.0.0/8"]}  # httpx's ASGI transport comes from 127.0.0.1
PASSWORD = "correct horse battery"
BAD_KEY = {"X-API-Key": "mlg_abcdefabcdef_" + "x" * 43}


def via(address: str) -> dict[str, str]:
    """Headers of a request that the trusted proxy received from ``address``."""
    return {"X-Forwarded-For": address}


def login_form(username: str, password: str) -> dict[str, str]:
    return {"username": username, "password": password}


async def new_user(app: FastAPI, name: str, **fields: Any) -> Any:
    accounts = app.state.mlgate.accounts
    return await accounts.create_user(
        name, password=PASSWORD, scopes=["predict", "models:read"], **fields
    )


async def new_key(app: FastAPI, name: str) -> dict[str, str]:
    user = await new_user(app, name)
    created = await app.state.mlgate.accounts.create_key(user.id, name="k")
    return {"X-API-Key": created.plaintext}


# -- item 4: IPv6 clients are grouped by network --------------------------------------


async def test_one_ipv6_64_shares_the_login_limit(backend: dict[str, Any]) -> None:
    async with limited_app(backend, **PROXY) as (_, client):
        codes = []
        for i in range(12):
            response = await client.post(
                "/v1/token",
                data=login_form(f"guess{i}", "wrong password"),
                headers=via(f"2001:db8:0:1::{i + 1:x}"),
            )
            codes.append(response.status_code)
        assert codes == [401] * 10 + [429, 429]
        assert response.json()["error"]["details"]["limit"] == "login"
        # The neighbouring /64 is another subscriber, with a budget of its own.
        other = await client.post(
            "/v1/token", data=login_form("guess", "wrong password"), headers=via("2001:db8:0:2::1")
        )
        assert other.status_code == 401


async def test_one_ipv6_64_shares_the_failed_auth_lockout(backend: dict[str, Any]) -> None:
    async with limited_app(backend, failed_auth_per_minute=3, **PROXY) as (_, client):
        codes = [
            (
                await client.get("/v1/models", headers={**BAD_KEY, **via(f"2001:db8::{i + 1}")})
            ).status_code
            for i in range(5)
        ]
        assert codes == [401, 401, 401, 429, 429]


async def test_anonymous_callers_of_one_64_are_one_principal(backend: dict[str, Any]) -> None:
    async with limited_app(backend, auth={"anonymous_enabled": True}, **PROXY) as (_, client):
        codes = [
            (await client.get("/v1/models", headers=via(f"2001:db8:0:1:{i:x}::1"))).status_code
            for i in range(11)
        ]
        assert codes == [200] * 10 + [429]
        me = await client.get("/v1/users/me", headers=via("2001:db8:0:7::5"))
        assert me.json()["subject"] == "2001:db8:0:7::/64"
        v4 = await client.get("/v1/users/me", headers=via("203.0.113.9"))
        assert v4.json()["subject"] == "203.0.113.9"


async def test_the_prefix_lengths_are_configurable(backend: dict[str, Any]) -> None:
    settings = {"ipv6_prefix_length": 128, "ipv4_prefix_length": 24, **PROXY}
    async with limited_app(backend, login_per_minute=2, **settings) as (_, client):
        v6 = [
            (
                await client.post(
                    "/v1/token", data=login_form("x", "wrong"), headers=via(f"2001:db8::{i + 1}")
                )
            ).status_code
            for i in range(3)
        ]
        assert v6 == [401, 401, 401]  # every address its own
        v4 = [
            (
                await client.post(
                    "/v1/token", data=login_form("y", "wrong"), headers=via(f"203.0.113.{i + 1}")
                )
            ).status_code
            for i in range(3)
        ]
        assert v4 == [401, 401, 429]  # one /24


# -- item 4: wrong passwords for one username back off ---------------------------------


async def test_wrong_passwords_for_one_username_lock_it_whatever_the_address(
    backend: dict[str, Any],
) -> None:
    async with limited_app(backend, **PROXY) as (app, client):
        await new_user(app, "alice")
        await new_user(app, "bob")
        # Each guess from another address: no per-address limit is reached.
        codes = [
            (
                await client.post(
                    "/v1/token",
                    data=login_form("Alice", f"wrong {i}"),
                    headers=via(f"198.51.100.{i + 1}"),
                )
            ).status_code
            for i in range(5)
        ]
        assert codes == [401] * 5
        # Now even the right password waits (or the lock would confirm guesses).
        locked = await client.post(
            "/v1/token", data=login_form("alice", PASSWORD), headers=via("203.0.113.50")
        )
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"]["details"]["limit"] == "username"
        assert int(locked.headers["retry-after"]) >= 1
        # Another username is not affected.
        other = await client.post(
            "/v1/token", data=login_form("bob", PASSWORD), headers=via("198.51.100.1")
        )
        assert other.status_code == 200
        # An unknown username backs off the same way: the lock reveals nothing.
        unknown = [
            (
                await client.post(
                    "/v1/token",
                    data=login_form("nobody", "wrong"),
                    headers=via(f"192.0.2.{i + 1}"),
                )
            ).status_code
            for i in range(6)
        ]
        assert unknown == [401] * 5 + [429]


async def test_the_username_backoff_doubles_up_to_its_cap() -> None:
    """With a clock of our own (the memory backend's): 1, 2, 4, 8 s, then the cap."""
    now = [10**12]
    settings = make_settings(
        auth={"anonymous_enabled": False},
        rate_limit={
            "enabled": True,
            "username_backoff_max_s": 10,
            "username_failure_decay_s": 86_400,
            **PROXY,
        },
    )
    async with running_app(settings) as (app, client):
        await new_user(app, "carol")
        app.state.mlgate.limits.limiter = MemoryRateLimiter(clock=lambda: now[0])

        async def attempt(password: str, i: int) -> tuple[int, int | None]:
            response = await client.post(
                "/v1/token", data=login_form("carol", password), headers=via(f"198.51.100.{i}")
            )
            retry = response.headers.get("retry-after")
            return response.status_code, int(retry) if retry else None

        assert [await attempt("wrong", i) for i in range(1, 6)] == [(401, None)] * 5
        waits = []
        for i in range(6):
            status, retry = await attempt(PASSWORD, 100 + i)
            assert status == 429 and retry is not None
            waits.append(retry)
            now[0] += retry * 1_000_000
            assert (await attempt("still wrong", 200 + i))[0] == 401
        assert waits == [1, 2, 4, 8, 10, 10]
        now[0] += 10 * 1_000_000
        assert (await attempt(PASSWORD, 250))[0] == 200


# -- item 9: the failed-auth lockout refuses failing attempts only ------------------------


async def test_a_blocked_address_still_serves_valid_credentials(backend: dict[str, Any]) -> None:
    async with limited_app(backend, failed_auth_per_minute=3) as (app, client):
        good = await new_key(app, "natuser")
        codes = [(await client.get("/v1/models", headers=BAD_KEY)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # A colleague behind the same NAT, with a valid key, is judged by her own limits.
        response = await client.get("/v1/models", headers=good)
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "10"
        # And can log in with her password (the login limit counts every attempt anyway).
        login = await client.post("/v1/token", data=login_form("natuser", PASSWORD))
        assert login.status_code == 200
        # Failing attempts from the address keep being refused, not answered 401.
        again = await client.post("/v1/token", data=login_form("natuser", "wrong"))
        assert again.status_code == 429
        assert again.json()["error"]["details"]["limit"] == "failed_auth"


# -- item 10: security limits survive a Redis outage -----------------------------------


async def test_security_limits_hold_with_redis_unreachable() -> None:
    settings = make_settings(
        auth={"anonymous_enabled": False},
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        rate_limit={
            "enabled": True,
            "backend": "redis",
            "fail_open": True,
            "login_per_minute": 3,
            "failed_auth_per_minute": 3,
            **PROXY,
        },
    )
    async with running_app(settings) as (app, client):
        good = await new_key(app, "dave")
        codes = [(await client.get("/v1/models", headers=BAD_KEY)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        logins = [
            (
                await client.post(
                    "/v1/token", data=login_form("dave", "wrong"), headers=via("203.0.113.1")
                )
            ).status_code
            for _ in range(4)
        ]
        assert logins == [401, 401, 401, 429]
        # The per-username backoff too (each guess from another address).
        guesses = [
            (
                await client.post(
                    "/v1/token",
                    data=login_form("dave", "wrong"),
                    headers=via(f"198.51.100.{i + 1}"),
                )
            ).status_code
            for i in range(3)
        ]
        assert guesses == [401, 401, 429]
        # Tier limits still fail open, as configured: admitted, without headers.
        for _ in range(12):
            response = await client.get("/v1/models", headers=good)
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers


async def test_failed_auth_limit_falls_back_when_redis_goes_away(
    redis_proxy: TcpProxy, key_prefix: str
) -> None:
    settings = make_settings(
        auth={"anonymous_enabled": False},
        redis_url=redis_proxy.url,
        rate_limit={
            "enabled": True,
            "backend": "redis",
            "redis_key_prefix": key_prefix,
            "failed_auth_per_minute": 3,
        },
    )
    async with running_app(settings) as (_, client):
        assert (await client.get("/v1/models", headers=BAD_KEY)).status_code == 401
        await redis_proxy.stop()
        # Counted in this worker's memory while Redis is away: never unlimited.
        codes = [(await client.get("/v1/models", headers=BAD_KEY)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        ready = await client.get("/health/ready")
        assert ready.json()["checks"]["rate_limiter"] == "degraded"
