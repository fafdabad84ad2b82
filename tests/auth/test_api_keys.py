"""API keys: format, shown once, accepted two ways, narrowed to their owner, last use,
and revocation that every worker sees at once."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Any

from sqlalchemy import select

from mlgate.auth.api_keys import generate_key, key_prefix
from mlgate.db.models import ApiKey
from tests.auth.conftest import Harness, api_key, bearer

KEY = re.compile(r"^mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def test_generated_keys_are_random_and_well_formed() -> None:
    keys = [generate_key() for _ in range(50)]
    assert len({k.plaintext for k in keys}) == 50
    for k in keys:
        assert KEY.match(k.plaintext)
        assert key_prefix(k.plaintext) == k.prefix
        assert k.digest == hashlib.sha256(k.plaintext.encode()).hexdigest()
    assert key_prefix("mlg_0123456789ab_short") is None
    assert key_prefix("eyJhbGciOi.x.y") is None


async def test_a_key_works_as_header_and_as_bearer(harness: Harness) -> None:
    key = await harness.key(await harness.user())
    for headers in (api_key(key), bearer(key)):
        response = await harness.client.get("/v1/users/me", headers=headers)
        assert response.status_code == 200
        body = response.json()
        assert body["kind"] == "api_key" and body["subject"] == "alice" and body["key_id"]


async def test_the_key_header_wins_over_authorization(harness: Harness) -> None:
    key = await harness.key(await harness.user())
    headers = {**api_key(key), "Authorization": "Bearer what.ever.else"}
    assert (await harness.client.get("/v1/users/me", headers=headers)).status_code == 200


async def test_only_the_digest_is_stored(harness: Harness) -> None:
    key = await harness.key(await harness.user())
    async with harness.app.state.mlgate.engine.connect() as conn:
        row = (await conn.execute(select(ApiKey.prefix, ApiKey.key_hash))).one()
    assert key.startswith(f"mlg_{row.prefix}_")
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.split("_", 2)[2] not in row.key_hash


async def test_a_key_never_exceeds_its_owner(harness: Harness) -> None:
    user = await harness.user("alice", ["predict", "models:read"])
    key = await harness.key(user, scopes=["models:read"])
    assert (await harness.client.get("/v1/models", headers=api_key(key))).status_code == 200
    response = await harness.client.post(
        "/v1/models/ids/predict", json={"features": [1]}, headers=api_key(key)
    )
    assert response.status_code == 403
    # The owner loses the scope: the key loses it too, at once.
    await harness.accounts.update_user(user.id, scopes=["predict"])
    assert (await harness.client.get("/v1/models", headers=api_key(key))).status_code == 403


async def test_limits_of_a_key_are_its_accounts_plus_its_own_cap(harness: Harness) -> None:
    """Issue 8 item 16: the account's tier and overrides; the key's overrides are a cap."""
    user = await harness.user(rate_limit_overrides={"requests_per_minute": 10, "burst": 5})
    key = await harness.key(user, tier="enterprise", rate_limit_overrides={"burst": 50})
    me = (await harness.client.get("/v1/users/me", headers=api_key(key))).json()
    assert me["tier"] == "free"
    assert me["rate_limit_overrides"] == {"requests_per_minute": 10, "burst": 5}
    assert me["key_rate_limit_overrides"] == {"burst": 50}
    plain = await harness.key(user)
    me = (await harness.client.get("/v1/users/me", headers=api_key(plain))).json()
    assert me["key_rate_limit_overrides"] is None


async def test_last_use_is_recorded_at_most_once_per_interval(harness: Harness) -> None:
    key = await harness.key(await harness.user())
    found, _ = await harness.accounts.find_key(key)
    assert found.last_used_at is None
    await harness.client.get("/v1/users/me", headers=api_key(key))
    first, _ = await harness.accounts.find_key(key)
    assert first.last_used_at is not None
    await harness.client.get("/v1/users/me", headers=api_key(key))
    second, _ = await harness.accounts.find_key(key)
    assert second.last_used_at == first.last_used_at


async def test_last_use_every_request_with_interval_zero(harness_factory: Any) -> None:
    # Last use is written when a key is verified against the database: with the
    # principal cache on, at most once per cache TTL.
    auth = {"key_last_used_interval_s": 0, "principal_cache_ttl_s": 0}
    async with harness_factory(auth=auth) as h:
        key = await h.key(await h.user())
        seen = set()
        for _ in range(3):
            await h.client.get("/v1/users/me", headers=api_key(key))
            seen.add((await h.accounts.find_key(key))[0].last_used_at)
        assert len(seen) == 3


async def test_revocation_reaches_every_worker_at_once(
    harness_factory: Any, redis_url: str
) -> None:
    """Two apps on one database stand for two workers (or replicas): a key revoked through
    one is refused by the other on its very next request, though both cache verified keys
    (Redis carries the announcement; tests/auth/test_principal_cache.py: the TTL bound
    without it)."""
    shared = {"redis_url": redis_url, "auth": {"principal_cache_ttl_s": 60}}
    async with harness_factory(**shared) as worker_a, harness_factory(**shared) as worker_b:
        await listening(worker_a, worker_b)
        admin_key = await worker_a.key(await worker_a.user("root", ["admin"]))
        key = await worker_a.key(await worker_a.user())
        assert (await worker_b.client.get("/v1/users/me", headers=api_key(key))).status_code == 200
        key_id = (await worker_a.accounts.find_key(key))[0].id
        response = await worker_a.client.delete(
            f"/v1/admin/api-keys/{key_id}", headers=api_key(admin_key)
        )
        assert response.status_code == 200 and response.json()["status"] == "revoked"
        refused = await eventually_refused(worker_b, api_key(key))
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]


async def test_disabling_the_owner_refuses_the_key(harness: Harness) -> None:
    user = await harness.user()
    key = await harness.key(user)
    await harness.accounts.update_user(user.id, disabled=True)
    response = await harness.client.get("/v1/users/me", headers=api_key(key))
    assert response.status_code == 403
    await harness.accounts.update_user(user.id, disabled=False)
    assert (await harness.client.get("/v1/users/me", headers=api_key(key))).status_code == 200


async def listening(*workers: Any) -> None:
    """Wait until each worker hears account changes over Redis."""
    for worker in workers:
        await asyncio.wait_for(worker.app.state.mlgate.account_changes.listening.wait(), 5)


async def eventually_refused(worker: Any, headers: dict[str, str]) -> Any:
    """The first non-200 answer within a second (pub/sub delivery takes milliseconds)."""
    deadline = time.monotonic() + 1.0
    while True:
        response = await worker.client.get("/v1/users/me", headers=headers)
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.01)
