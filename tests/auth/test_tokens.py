"""Logging in, what a token says, and how it is checked."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from mlgate.auth.signing import SigningKeyError, load_signing_keys
from mlgate.db.models import User
from tests.auth.conftest import PASSWORD, Harness, api_key, bearer, unsigned_token
from tests.conftest import TEST_JWT_SECRET, make_settings


async def test_login_issues_a_bearer_token_with_every_claim(harness: Harness) -> None:
    user = await harness.user("alice", ["predict", "models:read"], tier="pro")
    response = await harness.client.post(
        "/v1/token", data={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == harness.settings.auth.access_token_ttl_s
    assert body["scope"] == "models:read predict"
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = jwt.decode(
        body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"], audience="mlgate-api"
    )
    assert {"sub", "uid", "scope", "tier", "exp", "iat", "jti", "iss", "aud"} <= set(claims)
    assert claims["sub"] == "alice" and claims["uid"] == user.id and claims["tier"] == "pro"
    assert claims["iss"] == "mlgate" and claims["exp"] - claims["iat"] == body["expires_in"]
    me = await harness.client.get("/v1/users/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["kind"] == "user" and me.json()["subject"] == "alice"
    assert me.json()["user"]["tier"] == "pro"


async def test_each_login_gets_a_new_jti(harness: Harness) -> None:
    await harness.user()
    first, second = await harness.login(), await harness.login()
    decode: Any = jwt.decode
    options = {"verify_signature": False}
    assert decode(first, options=options)["jti"] != decode(second, options=options)["jti"]


async def test_wrong_password_and_unknown_user_look_the_same(harness: Harness) -> None:
    await harness.user()
    for username, password in [("alice", "wrong password!"), ("nobody", PASSWORD)]:
        response = await harness.client.post(
            "/v1/token", data={"username": username, "password": password}
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["message"] == "incorrect username or password"


async def test_user_without_password_cannot_log_in(harness: Harness) -> None:
    await harness.user("robot", password=None)
    response = await harness.client.post("/v1/token", data={"username": "robot", "password": ""})
    assert response.status_code in (401, 422)
    response = await harness.client.post(
        "/v1/token", data={"username": "robot", "password": "anything-at-all"}
    )
    assert response.status_code == 401


async def test_disabled_user_cannot_log_in(harness: Harness) -> None:
    user = await harness.user()
    await harness.accounts.update_user(user.id, disabled=True)
    response = await harness.client.post(
        "/v1/token", data={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_login_is_case_insensitive_on_the_username(harness: Harness) -> None:
    await harness.user("Alice")
    assert await harness.login("ALICE")


async def test_login_needs_the_form_fields(harness: Harness) -> None:
    response = await harness.client.post("/v1/token", json={"username": "a", "password": "b"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_a_token_can_ask_for_fewer_scopes_never_more(harness: Harness) -> None:
    await harness.user("alice", ["predict", "models:read"])
    token = await harness.login(scope="predict admin")
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "predict"
    assert (await harness.client.get("/v1/models", headers=bearer(token))).status_code == 403
    response = await harness.client.post(
        "/v1/token", data={"username": "alice", "password": PASSWORD, "scope": "root"}
    )
    assert response.status_code == 422


async def test_token_refusals_say_why(harness: Harness) -> None:
    user = await harness.user()
    now = int(time.time())
    cases = {
        "expired": harness.hs_token(user, iat=now - 600, exp=now - 120),
        "audience": harness.hs_token(user, aud="someone-else"),
        "issuer": harness.hs_token(user, iss="someone-else"),
        "algorithm": unsigned_token(harness.claims(user)),
        "signature": harness.hs_token(user, secret="x" * 40),
        "claim": harness.hs_token(user, uid=None),
    }
    for reason, token in cases.items():
        response = await harness.client.get("/v1/users/me", headers=bearer(token))
        assert response.status_code == 401, reason
        assert reason in response.json()["error"]["message"], response.text
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_clock_skew_within_the_leeway_is_accepted(harness: Harness) -> None:
    user = await harness.user()
    now = int(time.time())
    leeway = harness.settings.auth.jwt_leeway_s
    token = harness.hs_token(user, iat=now - 600, exp=now - int(leeway / 2))
    assert (await harness.client.get("/v1/users/me", headers=bearer(token))).status_code == 200


async def test_token_of_a_user_that_no_longer_matches_is_refused(harness: Harness) -> None:
    user = await harness.user()
    token = harness.hs_token(user, sub="bob")
    assert (await harness.client.get("/v1/users/me", headers=bearer(token))).status_code == 401
    token = harness.hs_token(user, uid=user.id + 1000)
    assert (await harness.client.get("/v1/users/me", headers=bearer(token))).status_code == 401


async def test_removing_a_scope_applies_to_tokens_already_issued(harness: Harness) -> None:
    user = await harness.user("alice", ["predict", "models:read"])
    token = await harness.login()
    assert (await harness.client.get("/v1/models", headers=bearer(token))).status_code == 200
    await harness.accounts.update_user(user.id, scopes=["predict"], tier="pro")
    assert (await harness.client.get("/v1/models", headers=bearer(token))).status_code == 403
    me = (await harness.client.get("/v1/users/me", headers=bearer(token))).json()
    assert me["scopes"] == ["predict"] and me["tier"] == "pro"


async def test_stateless_tokens_skip_the_user_lookup(harness_factory: Any) -> None:
    """The documented trade-off of check_user_on_token=false: a disabled user's token
    stays valid until it expires (keys are still refused at once)."""
    async with harness_factory(auth={"check_user_on_token": False}) as h:
        user = await h.user()
        token = await h.login()
        key = await h.key(user)
        await h.accounts.update_user(user.id, disabled=True)
        assert (await h.client.get("/v1/users/me", headers=bearer(token))).status_code == 200
        assert (await h.client.get("/v1/users/me", headers=api_key(key))).status_code == 403


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
async def test_key_pair_signing(
    harness_factory: Any, algorithm: str, rsa_key_files: Any, ed25519_key_files: Any
) -> None:
    private, public = rsa_key_files if algorithm == "RS256" else ed25519_key_files
    auth = {"jwt_algorithm": algorithm, "jwt_private_key_file": private}
    async with harness_factory(auth=auth) as h:
        await h.user()
        token = await h.login()
        assert jwt.get_unverified_header(token)["alg"] == algorithm
        claims = jwt.decode(
            token, public.read_bytes(), algorithms=[algorithm], audience="mlgate-api"
        )
        assert claims["sub"] == "alice"
        assert (await h.client.get("/v1/users/me", headers=bearer(token))).status_code == 200
        # An HS256 token signed with the well-known test secret means nothing here.
        forged = h.hs_token(await h.accounts.find_user("alice"))
        assert (await h.client.get("/v1/users/me", headers=bearer(forged))).status_code == 401


def test_signing_keys_must_fit_the_algorithm(
    rsa_key_files: Any, ed25519_key_files: Any, tmp_path: Any
) -> None:
    rsa_private, _ = rsa_key_files
    ed_private, ed_public = ed25519_key_files
    with pytest.raises(SigningKeyError, match="EdDSA needs"):
        load_signing_keys(
            make_settings(auth={"jwt_algorithm": "EdDSA", "jwt_private_key_file": rsa_private})
        )
    with pytest.raises(SigningKeyError, match="not the public half"):
        load_signing_keys(
            make_settings(
                auth={
                    "jwt_algorithm": "RS256",
                    "jwt_private_key_file": rsa_private,
                    "jwt_public_key_file": ed_public,
                }
            )
        )
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_keys(
            make_settings(
                auth={"jwt_algorithm": "RS256", "jwt_private_key_file": tmp_path / "missing.pem"}
            )
        )
    keys = load_signing_keys(
        make_settings(auth={"jwt_algorithm": "EdDSA", "jwt_private_key_file": ed_private})
    )
    assert keys.algorithm == "EdDSA"


async def test_login_upgrades_a_hash_made_with_old_parameters(harness: Harness) -> None:
    user = await harness.user()
    old = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(PASSWORD)
    async with harness.app.state.mlgate.engine.begin() as conn:
        await conn.execute(update(User).where(User.id == user.id).values(password_hash=old))
    await harness.login()
    async with harness.app.state.mlgate.engine.connect() as conn:
        stored = (await conn.execute(select(User.password_hash))).scalar_one()
    assert stored != old and "t=1" in stored
