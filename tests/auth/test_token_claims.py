"""Tokens built by hand with PyJWT: every claim is required and only the configured
algorithm is accepted. Each refusal is a 401 through HTTP, never a 500 or a 200."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest

from tests.auth.conftest import Harness, bearer, unsigned_token
from tests.conftest import TEST_JWT_SECRET

CLAIMS = ["sub", "uid", "scope", "tier", "exp", "iat", "jti", "iss", "aud"]


async def _refused(harness: Harness, token: str, reason: str) -> None:
    response = await harness.client.get("/v1/users/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert reason in response.json()["error"]["message"], response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_complete_token_is_accepted(harness: Harness) -> None:
    """The control for the refusals below: the same claims, none missing, HS256."""
    user = await harness.user()
    token = jwt.encode(harness.claims(user), TEST_JWT_SECRET, algorithm="HS256")
    response = await harness.client.get("/v1/users/me", headers=bearer(token))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("claim", CLAIMS)
async def test_a_token_missing_any_claim_is_401(harness: Harness, claim: str) -> None:
    user = await harness.user()
    token = jwt.encode(harness.claims(user, **{claim: None}), TEST_JWT_SECRET, algorithm="HS256")
    assert claim not in jwt.decode(token, options={"verify_signature": False})
    response = await harness.client.get("/v1/users/me", headers=bearer(token))
    assert response.status_code == 401, f"{claim}: {response.status_code} {response.text}"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_expiry_and_issue_time_are_required_claims(harness: Harness) -> None:
    # Without them a token would never expire (exp) or have no age (iat).
    user = await harness.user()
    for claim in ("exp", "iat"):
        token = jwt.encode(
            harness.claims(user, **{claim: None}), TEST_JWT_SECRET, algorithm="HS256"
        )
        await _refused(harness, token, "token lacks a required claim")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_other_hmac_algorithms_with_the_right_secret_are_401(
    harness: Harness, algorithm: str
) -> None:
    """An HS256 server accepts HS256 only, even for a token its own secret signed."""
    user = await harness.user()
    token = jwt.encode(harness.claims(user), TEST_JWT_SECRET, algorithm=algorithm)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    await _refused(harness, token, "token algorithm is not accepted")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_unsigned_tokens_are_401(harness: Harness, alg: str) -> None:
    user = await harness.user()
    token = unsigned_token(harness.claims(user), {"alg": alg, "typ": "JWT"})
    response = await harness.client.get("/v1/users/me", headers=bearer(token))
    assert response.status_code == 401, response.text


def _hs256_signed_with(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token whose HMAC key is ``key`` (PyJWT refuses to sign with a PEM key)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = part(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


async def test_algorithm_confusion_with_the_public_key_is_401(
    harness_factory: Any, rsa_key_files: Any
) -> None:
    """On an RS256 server, HS256 signed with the (public) verification key is a forgery."""
    private, public = rsa_key_files
    async with harness_factory(
        auth={"jwt_algorithm": "RS256", "jwt_private_key_file": private}
    ) as h:
        user = await h.user()
        claims = h.claims(user)
        genuine = jwt.encode(claims, private.read_bytes(), algorithm="RS256")
        assert (await h.client.get("/v1/users/me", headers=bearer(genuine))).status_code == 200
        for key in (public.read_bytes(), public.read_bytes().strip()):
            await _refused(h, _hs256_signed_with(key, claims), "token algorithm is not accepted")
        # The other RSA algorithms, signed with the right private key, are refused too.
        for algorithm in ("RS384", "RS512", "PS256"):
            token = jwt.encode(claims, private.read_bytes(), algorithm=algorithm)
            await _refused(h, token, "token algorithm is not accepted")
