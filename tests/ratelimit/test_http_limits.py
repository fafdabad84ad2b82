"""Rate limits end to end through HTTP, on the memory and on the Redis backend."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from tests.conftest import make_settings, running_app
from tests.ratelimit.conftest import limited_app

ROW = [0.5] * 77


async def new_key(app: FastAPI, name: str, tier: str = "free", **overrides: Any) -> str:
    accounts = app.state.mlgate.accounts
    user = await accounts.create_user(
        name, password="pw-" + name * 3, scopes=["predict", "models:read"], tier=tier
    )
    created = await accounts.create_key(
        user.id, name="k", tier=tier, rate_limit_overrides=overrides or None
    )
    return str(created.plaintext)


async def test_tier_limit_admits_exactly_n_then_429(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (app, client):
        key = await new_key(app, "freeuser")
        headers = {"X-API-Key": key}
        codes = []
        for i in range(11):
            response = await client.post(
                "/v1/models/ids/predict", json={"features": ROW}, headers=headers
            )
            codes.append(response.status_code)
            if i == 0:
                assert response.headers["ratelimit-limit"] == "10"
                assert response.headers["ratelimit-remaining"] == "9"
                assert int(response.headers["ratelimit-reset"]) >= 1
        assert codes == [200] * 10 + [429]
        error = response.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["details"]["limit"] == "requests"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-remaining"] == "0"
        # Another principal has a bucket of its own.
        other = await new_key(app, "otheruser")
        response = await client.post(
            "/v1/models/ids/predict", json={"features": ROW}, headers={"X-API-Key": other}
        )
        assert response.status_code == 200


async def test_tiers_and_per_key_overrides(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (app, client):
        pro = await new_key(app, "prouser", tier="pro")
        response = await client.get("/v1/models", headers={"X-API-Key": pro})
        assert response.headers["ratelimit-limit"] == "100"
        tight = await new_key(app, "tightuser", tier="pro", requests_per_minute=3)
        codes = [
            (await client.get("/v1/models", headers={"X-API-Key": tight})).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]


async def test_batch_rows_are_counted(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (app, client):
        key = await new_key(app, "rowsuser", rows_per_minute=100)
        headers = {"X-API-Key": key}
        batch = {"instances": [ROW] * 60}
        first = await client.post("/v1/models/ids/predict/batch", json=batch, headers=headers)
        assert first.status_code == 200
        second = await client.post("/v1/models/ids/predict/batch", json=batch, headers=headers)
        assert second.status_code == 429
        assert second.json()["error"]["details"]["limit"] == "rows"
        # Exactly the 40 rows left still fit; then not even one row does.
        rest = {"instances": [ROW] * 40}
        fits = await client.post("/v1/models/ids/predict/batch", json=rest, headers=headers)
        assert fits.status_code == 200
        one = await client.post("/v1/models/ids/predict", json={"features": ROW}, headers=headers)
        assert one.status_code == 429
        # A batch that can never fit the allowance is 413, not a 429 to retry forever.
        huge = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": [ROW] * 101}, headers=headers
        )
        assert huge.status_code == 413
        assert huge.json()["error"]["details"]["max_rows_at_once"] == 100
        # The seed batch route counts rows too.
        legacy = await client.post("/predict/batch", json=[{"features": ROW}] * 30, headers=headers)
        assert legacy.status_code == 429


async def test_login_attempts_are_limited_per_ip(backend: dict[str, Any]) -> None:
    async with limited_app(backend, login_per_minute=3) as (app, client):
        await app.state.mlgate.accounts.create_user("alice", password="correct horse battery")
        form = {"username": "alice", "password": "correct horse battery"}
        codes = [(await client.post("/v1/token", data=form)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


async def test_failed_authentications_block_the_ip(backend: dict[str, Any]) -> None:
    async with limited_app(backend, failed_auth_per_minute=3) as (app, client):
        good = await new_key(app, "victim")
        bad = {"X-API-Key": "mlg_abcdefgh_" + "x" * 43}
        codes = [(await client.get("/v1/models", headers=bad)).status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        blocked = await client.get("/v1/models", headers=bad)
        assert blocked.status_code == 429
        assert blocked.json()["error"]["details"]["limit"] == "failed_auth"
        assert int(blocked.headers["retry-after"]) >= 1
        # Valid credentials from that address are served (issue 8 item 9): the lockout
        # refuses failing attempts, not everyone behind the address.
        assert (await client.get("/v1/models", headers={"X-API-Key": good})).status_code == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    backend: dict[str, Any],
) -> None:
    overrides = {**backend, "rate_limit": {**backend["rate_limit"]}}
    overrides["rate_limit"]["trusted_proxies"] = ["127.0.0.0/8"]
    settings = make_settings(auth={"anonymous_enabled": True}, **overrides)
    async with running_app(settings) as (_, client):
        # httpx's ASGI transport connects from 127.0.0.1, a trusted proxy here.
        for client_ip in ("203.0.113.7", "203.0.113.8"):
            headers = {"X-Forwarded-For": client_ip}
            codes = [
                (await client.get("/v1/models", headers=headers)).status_code for _ in range(11)
            ]
            assert codes == [200] * 10 + [429], client_ip
    overrides["rate_limit"]["trusted_proxies"] = []
    settings = make_settings(auth={"anonymous_enabled": True}, **overrides)
    async with running_app(settings) as (_, client):
        codes = [
            (
                await client.get("/v1/models", headers={"X-Forwarded-For": f"198.51.100.{i}"})
            ).status_code
            for i in range(11)
        ]
        # Untrusted peer: the spoofed header is ignored, all share the peer's bucket.
        assert codes == [200] * 10 + [429]


async def test_health_is_never_limited(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (_, client):
        for _ in range(30):
            assert (await client.get("/health/live")).status_code == 200


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_down(fail_open: bool) -> None:
    settings = make_settings(
        auth={"anonymous_enabled": True},
        redis_url="redis://127.0.0.1:1/0",
        rate_limit={"enabled": True, "backend": "redis", "fail_open": fail_open},
    )
    async with running_app(settings) as (_, client):
        response = await client.post("/v1/models/ids/predict", json={"features": ROW})
        ready = await client.get("/health/ready")
        if fail_open:
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
            assert ready.status_code == 200
            assert ready.json()["checks"]["rate_limiter"] == "degraded"
        else:
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "rate_limiter_unavailable"
            assert "retry-after" in response.headers
            assert ready.status_code == 503
            assert ready.json()["error"]["details"]["checks"]["rate_limiter"] == "down"


async def test_limits_are_per_account_not_per_key(backend: dict[str, Any]) -> None:
    """A free user with five keys and a token gets the free tier's 10 a minute in all."""
    async with limited_app(backend) as (app, client):
        accounts = app.state.mlgate.accounts
        user = await accounts.create_user(
            "manykeys", password="pw-manykeys-1", scopes=["predict", "models:read"]
        )
        keys = [(await accounts.create_key(user.id, name=f"k{i}")).plaintext for i in range(5)]
        token = (
            await client.post(
                "/v1/token", data={"username": "manykeys", "password": "pw-manykeys-1"}
            )
        ).json()["access_token"]
        credentials = [{"X-API-Key": key} for key in keys] + [{"Authorization": f"Bearer {token}"}]
        codes = [
            (await client.get("/v1/models", headers=credentials[i % 6])).status_code
            for i in range(12)
        ]
        assert codes == [200] * 10 + [429, 429]
        # Rows too: one account, one row budget, whichever credential spends it.
        rows_user = await accounts.create_user(
            "rowsacct",
            password=None,
            scopes=["predict"],
            rate_limit_overrides={"rows_per_minute": 50},
        )
        a, b = [(await accounts.create_key(rows_user.id, name=n)).plaintext for n in "ab"]
        batch = {"instances": [ROW] * 30}
        first = await client.post(
            "/v1/models/ids/predict/batch", json=batch, headers={"X-API-Key": a}
        )
        assert first.status_code == 200
        second = await client.post(
            "/v1/models/ids/predict/batch", json=batch, headers={"X-API-Key": b}
        )
        assert second.status_code == 429
        assert second.json()["error"]["details"]["limit"] == "rows"


async def test_a_key_override_is_an_extra_cap_within_the_account(
    backend: dict[str, Any],
) -> None:
    async with limited_app(backend) as (app, client):
        accounts = app.state.mlgate.accounts
        user = await accounts.create_user("capped", password=None, scopes=["models:read"])
        ci = (
            await accounts.create_key(
                user.id, name="ci", rate_limit_overrides={"requests_per_minute": 3}
            )
        ).plaintext
        main = (await accounts.create_key(user.id, name="main")).plaintext
        ci_codes = [
            (await client.get("/v1/models", headers={"X-API-Key": ci})).status_code
            for _ in range(4)
        ]
        assert ci_codes == [200, 200, 200, 429]
        # The capped key's refusal left the account its remaining 7 (3 spent).
        main_codes = [
            (await client.get("/v1/models", headers={"X-API-Key": main})).status_code
            for _ in range(8)
        ]
        assert main_codes == [200] * 7 + [429]
        # An override on the key never raises it above its account.
        generous = (
            await accounts.create_key(
                user.id, name="generous", rate_limit_overrides={"requests_per_minute": 500}
            )
        ).plaintext
        response = await client.get("/v1/models", headers={"X-API-Key": generous})
        assert response.status_code == 429
