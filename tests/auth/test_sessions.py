"""Revoking access tokens (issue 8 item 6): a password change, and an explicit "revoke
sessions" (admin API and CLI), refuse every token issued before it, on every worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from click.testing import CliRunner

from mlgate.cli.main import cli
from tests.auth.conftest import PASSWORD, Harness, api_key, bearer
from tests.conftest import make_settings, running_app

NEW_PASSWORD = "a brand new passphrase"


async def status(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await client.get("/v1/users/me", headers=headers)).status_code


async def test_a_password_change_revokes_earlier_tokens(harness: Harness) -> None:
    admin = api_key(await harness.key(await harness.user("root", ["admin"])))
    user = await harness.user("alice")
    key = api_key(await harness.key(user))
    before = bearer(await harness.login())
    assert await status(harness.client, before) == 200
    changed = await harness.client.patch(
        f"/v1/admin/users/{user.id}", json={"password": NEW_PASSWORD}, headers=admin
    )
    assert changed.status_code == 200
    refused = await harness.client.get("/v1/users/me", headers=before)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "token has been revoked: log in again"
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    # A new login (even within the same second) works; API keys are not sessions.
    after = bearer(await harness.login("alice", NEW_PASSWORD))
    assert await status(harness.client, after) == 200
    assert await status(harness.client, key) == 200


async def test_an_admin_can_revoke_a_users_sessions(harness: Harness) -> None:
    admin = api_key(await harness.key(await harness.user("root", ["admin"])))
    user = await harness.user("bob")
    other = await harness.user("carol")
    tokens = [bearer(await harness.login("bob")) for _ in range(2)]
    carols = bearer(await harness.login("carol"))
    revoked = await harness.client.post(f"/v1/admin/users/{user.id}/revoke-sessions", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["username"] == "bob"
    assert [await status(harness.client, t) for t in tokens] == [401, 401]
    assert await status(harness.client, carols) == 200  # only bob's
    assert await status(harness.client, bearer(await harness.login("bob"))) == 200
    for path in (f"/v1/admin/users/{other.id + 100}", f"/v1/admin/users/{2**63}"):
        missing = await harness.client.post(f"{path}/revoke-sessions", headers=admin)
        assert missing.status_code == 404
    # Only admins may.
    bobs = bearer(await harness.login("bob"))
    forbidden = await harness.client.post(
        f"/v1/admin/users/{other.id}/revoke-sessions", headers=bobs
    )
    assert forbidden.status_code == 403


async def test_revocation_reaches_another_worker_at_once(
    harness_factory: Any, redis_url: str
) -> None:
    # Both workers cache verified tokens; Redis tells the other one at once.
    shared = {"redis_url": redis_url, "auth": {"principal_cache_ttl_s": 60}}
    async with harness_factory(**shared) as a:
        user = await a.user("dave")
        token = bearer(await a.login("dave"))
        settings = a.app.state.settings
        async with running_app(settings) as (other_app, other_worker):
            changes = [a.app.state.mlgate.account_changes, other_app.state.mlgate.account_changes]
            for channel in changes:
                await asyncio.wait_for(channel.listening.wait(), 5)
            assert await status(other_worker, token) == 200
            await a.accounts.revoke_sessions(user.id)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                if await status(other_worker, token) != 200:
                    break
                await asyncio.sleep(0.01)
            assert await status(other_worker, token) == 401


async def test_the_cli_revokes_sessions_and_password_changes_revoke_too(
    database_env: dict[str, Any], tmp_path: Any
) -> None:
    def run(*args: str, input: str | None = None) -> Any:
        result = CliRunner().invoke(cli, list(args), input=input)
        assert result.exit_code == 0, result.output
        return result

    await asyncio.to_thread(
        run, "users", "create", "erin", "--scope", "predict", "--password-stdin",
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    settings = make_settings(
        **database_env, models={"repository": tmp_path / "none"}, auth={"anonymous_enabled": False}
    )
    async with running_app(settings) as (_, client):

        async def login(password: str) -> dict[str, str]:
            response = await client.post(
                "/v1/token", data={"username": "erin", "password": password}
            )
            assert response.status_code == 200, response.text
            return bearer(response.json()["access_token"])

        token = await login(PASSWORD)
        out = await asyncio.to_thread(run, "users", "revoke-sessions", "erin")
        assert "revoked" in out.output and "erin" in out.output
        assert await status(client, token) == 401
        token = await login(PASSWORD)
        await asyncio.to_thread(
            run, "users", "set-password", "erin", "--password-stdin", input=f"{NEW_PASSWORD}\n"
        )
        assert await status(client, token) == 401
        assert await status(client, await login(NEW_PASSWORD)) == 200
    missing = await asyncio.to_thread(
        CliRunner().invoke, cli, ["users", "revoke-sessions", "nobody"]
    )
    assert missing.exit_code == 1 and "no user named 'nobody'" in missing.output


async def test_tokens_from_before_the_upgrade_stay_valid_until_revoked(harness: Harness) -> None:
    """Tokens without the epoch claim (issued by an older mlgate) count as epoch 0."""
    user = await harness.user("frank")
    old = bearer(harness.hs_token(user))
    assert await status(harness.client, old) == 200
    await harness.accounts.revoke_sessions(user.id)
    assert await status(harness.client, old) == 401
    forged = bearer(harness.hs_token(user, ep="1"))
    assert await status(harness.client, forged) == 401
