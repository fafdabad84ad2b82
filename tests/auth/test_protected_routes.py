"""Every route but the health probes, login and the docs needs a principal with the right
scope. The routes are enumerated from the app: a new route that is not in the table
below fails ``test_every_route_is_classified`` until its protection is decided."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from mlgate.api.app import create_app
from tests.auth.conftest import Harness, api_key, bearer, unsigned_token
from tests.conftest import TEST_JWT_SECRET, make_settings

OPEN = {
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/"),
    ("GET", "/health/ready"),
    ("POST", "/v1/token"),
    # FastAPI's documentation: open when enabled (see MLGATE_SERVER__DOCS_ENABLED).
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    # The Open Inference Protocol's probes, like /health/*.
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    # The dashboard's static page and files: its data comes from the APIs, with the
    # signed-in key.
    ("GET", "/dashboard"),
    ("GET", "/dashboard/{name}"),
}
ANY_PRINCIPAL = None
PROTECTED: dict[tuple[str, str], str | None] = {
    ("POST", "/v1/models/{model}/predict"): "predict",
    ("POST", "/v1/models/{model}/predict/batch"): "predict",
    ("POST", "/v1/models/{model}:predict"): "predict",
    ("POST", "/v1/models/{model}/versions/{version}:predict"): "predict",
    ("POST", "/v1/models/{model}:explain"): "predict",
    ("POST", "/v1/models/{model}/versions/{version}:explain"): "predict",
    ("POST", "/predict"): "predict",
    ("POST", "/predict/batch"): "predict",
    ("GET", "/v1/models"): "models:read",
    ("GET", "/metrics"): "metrics:read",
    ("GET", "/health/detailed"): "admin",
    ("GET", "/v1/models/{model}"): "models:read",
    ("GET", "/v1/models/{model}/versions/{version}"): "models:read",
    ("GET", "/model/info"): "models:read",
    ("GET", "/models"): "models:read",
    ("GET", "/info"): "models:read",
    ("GET", "/v2"): "models:read",
    ("GET", "/v2/models/{model}"): "models:read",
    ("GET", "/v2/models/{model}/versions/{version}"): "models:read",
    ("GET", "/v2/models/{model}/ready"): "models:read",
    ("GET", "/v2/models/{model}/versions/{version}/ready"): "models:read",
    ("POST", "/v2/models/{model}/infer"): "predict",
    ("POST", "/v2/models/{model}/versions/{version}/infer"): "predict",
    ("GET", "/v1/models/{model}/devices/{device_id}/baseline"): "predict",
    ("PUT", "/v1/models/{model}/devices/{device_id}/baseline"): "admin",
    ("DELETE", "/v1/models/{model}/devices/{device_id}/baseline"): "admin",
    ("GET", "/v1/models/{model}/devices/{device_id}/detector"): "predict",
    ("DELETE", "/v1/models/{model}/devices/{device_id}/detector"): "admin",
    ("PUT", "/v1/models/{model}/devices/{device_id}/detector/alarm"): "admin",
    ("GET", "/v1/predictions"): "predict",
    ("GET", "/v1/predictions/{prediction_id}"): "predict",
    ("POST", "/v1/predictions/{prediction_id}/feedback"): "feedback",
    ("POST", "/v1/feedback"): "feedback",
    ("GET", "/v1/models/{model}/quality"): "models:read",
    ("GET", "/v1/usage"): "predict",
    ("GET", "/v1/admin/usage"): "admin",
    ("POST", "/v1/admin/models/reload"): "admin",
    ("POST", "/v1/admin/users"): "admin",
    ("GET", "/v1/admin/users"): "admin",
    ("GET", "/v1/admin/users/{user_id}"): "admin",
    ("PATCH", "/v1/admin/users/{user_id}"): "admin",
    ("POST", "/v1/admin/api-keys"): "admin",
    ("GET", "/v1/admin/api-keys"): "admin",
    ("GET", "/v1/admin/api-keys/{key_id}"): "admin",
    ("PATCH", "/v1/admin/api-keys/{key_id}"): "admin",
    ("DELETE", "/v1/admin/api-keys/{key_id}"): "admin",
    ("GET", "/v1/admin/device-shares"): "admin",
    ("PUT", "/v1/admin/device-shares/{grantee}/{device_id}"): "admin",
    ("DELETE", "/v1/admin/device-shares/{grantee}/{device_id}"): "admin",
    ("GET", "/v1/users/me"): ANY_PRINCIPAL,
    ("POST", "/v2/repository/index"): "admin",
    ("GET", "/v1/models/{model}/drift"): "models:read",
    ("POST", "/v1/admin/models/{model}/aliases"): "admin",
    ("GET", "/v1/admin/models/{model}/aliases"): "admin",
    ("DELETE", "/v1/admin/models/{model}/aliases/{alias}"): "admin",
    ("GET", "/v1/admin/signals"): "admin",
    # As admin it stops serving `ids` for the rest of that test's app.
    ("POST", "/v2/repository/models/{model}/load"): "admin",
    ("POST", "/v2/repository/models/{model}/unload"): "admin",
    # Last: called with user 1's own token, it refuses that token from then on.
    ("POST", "/v1/admin/users/{user_id}/revoke-sessions"): "admin",
}
PATH_VALUES = {
    "{model}": "ids",
    "{version}": "1",
    "{user_id}": "1",
    "{key_id}": "1",
    "{device_id}": "pump-1",
    "{grantee}": "user:1",
    "{alias}": "canary",
    "{prediction_id}": "01JD7X0000000000000000000A-0",
}


def error_of(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error: the v1 envelope's, or on /v2 the Open Inference
    Protocol's ``{"error": "message"}`` (whose code is its status)."""
    error = response.json()["error"]
    if isinstance(error, str):
        codes = {401: "unauthorized", 403: "forbidden"}
        return codes.get(response.status_code, str(response.status_code)), error
    return error["code"], error["message"]


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route, included routers flattened; a mount or other route
    without methods counts as ("*", path) so that it too must be classified."""
    return {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        for method in (getattr(route, "methods", None) or {"*"}) - {"HEAD", "OPTIONS"}
    }


def test_every_route_is_classified() -> None:
    routes = app_routes(create_app(make_settings()))
    unclassified = routes - OPEN - PROTECTED.keys()
    assert not unclassified, f"decide the scope of {sorted(unclassified)} in PROTECTED"
    assert not (PROTECTED.keys() - routes), "PROTECTED names routes that no longer exist"


def test_docs_are_off_in_production_unless_enabled() -> None:
    production = {"env": "production", "auth": {"jwt_secret": TEST_JWT_SECRET}}
    routes = app_routes(create_app(make_settings(**production)))
    assert ("GET", "/docs") not in routes and ("GET", "/openapi.json") not in routes
    production["server"] = {"docs_enabled": True}
    assert ("GET", "/docs") in app_routes(create_app(make_settings(**production)))


async def call(
    client: httpx.AsyncClient, route: tuple[str, str], headers: dict[str, str]
) -> httpx.Response:
    method, path = route
    for name, value in PATH_VALUES.items():
        path = path.replace(name, value)
    body = {} if method in ("POST", "PATCH") else None
    return await client.request(method, path, json=body, headers=headers)


async def statuses(
    client: httpx.AsyncClient, headers: dict[str, str], routes: list[tuple[str, str]] | None = None
) -> dict[tuple[str, str], httpx.Response]:
    return {route: await call(client, route, headers) for route in routes or list(PROTECTED)}


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Harness], Awaitable[dict[str, str]]]
    settings: dict[str, Any] | None = None


async def _no_credentials(h: Harness) -> dict[str, str]:
    return {}


async def _garbage_token(h: Harness) -> dict[str, str]:
    return bearer("not.a.jwt")


async def _expired_token(h: Harness) -> dict[str, str]:
    past = int(time.time()) - 3600
    return bearer(h.hs_token(await h.user(), iat=past - 600, exp=past))


async def _forged_token(h: Harness) -> dict[str, str]:
    return bearer(h.hs_token(await h.user(), secret="another secret of at least 32 bytes!"))


async def _alg_none_token(h: Harness) -> dict[str, str]:
    return bearer(unsigned_token(h.claims(await h.user())))


async def _wrong_audience(h: Harness) -> dict[str, str]:
    return bearer(h.hs_token(await h.user(), aud="another-api"))


async def _wrong_issuer(h: Harness) -> dict[str, str]:
    return bearer(h.hs_token(await h.user(), iss="https://evil.example"))


async def _missing_claim(h: Harness) -> dict[str, str]:
    return bearer(h.hs_token(await h.user(), jti=None))


async def _hs_signed_with_rs_public_key(h: Harness) -> dict[str, str]:
    # Algorithm confusion: the server verifies RS256 with its public key; an attacker
    # signs HS256 using that (public) key as the HMAC secret.
    import base64
    import hashlib
    import hmac
    import json

    public_pem = h.settings.auth.jwt_public_key_file.read_bytes()

    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(h.claims(await h.user()))
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return bearer(
        (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    )


async def _rs_token_on_hs_server(h: Harness) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return bearer(jwt.encode(h.claims(await h.user()), attacker, algorithm="RS256"))


async def _revoked_key(h: Harness) -> dict[str, str]:
    user = await h.user()
    key = await h.key(user)
    found, _ = await h.accounts.find_key(key)
    await h.accounts.revoke_key(found.id)
    return api_key(key)


async def _expired_key(h: Harness) -> dict[str, str]:
    from datetime import UTC, datetime, timedelta

    user = await h.user()
    return api_key(await h.key(user, expires_at=datetime.now(UTC) - timedelta(seconds=1)))


async def _wrong_key_secret(h: Harness) -> dict[str, str]:
    key = await h.key(await h.user())
    tampered = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    return api_key(tampered)


async def _malformed_key_as_bearer(h: Harness) -> dict[str, str]:
    return bearer("mlg_nothex_short")


async def _basic_auth(h: Harness) -> dict[str, str]:
    return {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}


REFUSED = [
    Case("no credentials", _no_credentials),
    Case("garbage token", _garbage_token),
    Case("expired token", _expired_token),
    Case("forged token", _forged_token),
    Case("alg none", _alg_none_token),
    Case("wrong audience", _wrong_audience),
    Case("wrong issuer", _wrong_issuer),
    Case("missing jti", _missing_claim),
    Case("HS256 signed with the RS256 public key", _hs_signed_with_rs_public_key, {"rsa": True}),
    Case("RS256 token on an HS256 server", _rs_token_on_hs_server),
    Case("revoked key", _revoked_key),
    Case("expired key", _expired_key),
    Case("key with a wrong secret", _wrong_key_secret),
    Case("malformed key", _malformed_key_as_bearer),
    Case("Basic scheme", _basic_auth),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
async def test_bad_credentials_are_401_everywhere(
    case: Case, harness_factory: Any, rsa_key_files: Any
) -> None:
    overrides: dict[str, Any] = {}
    if case.settings and case.settings.get("rsa"):
        private, public = rsa_key_files
        overrides["auth"] = {
            "jwt_algorithm": "RS256",
            "jwt_private_key_file": private,
            "jwt_public_key_file": public,
        }
    async with harness_factory(**overrides) as h:
        headers = await case.make(h)
        results = await statuses(h.client, headers)
    wrong = {
        f"{m} {p}": r.status_code
        for (m, p), r in results.items()
        if r.status_code != 401
        or error_of(r)[0] != "unauthorized"
        or not r.headers.get("www-authenticate", "").startswith("Bearer")
    }
    assert not wrong, f"{case.name}: not a 401 with WWW-Authenticate: {wrong}"


async def test_missing_scope_is_403_everywhere(harness: Harness) -> None:
    wrong = {}
    keys: dict[str, str] = {}
    for route, scope in PROTECTED.items():
        if scope is ANY_PRINCIPAL:
            continue
        if scope not in keys:
            others = [s for s in ("predict", "models:read", "feedback") if s != scope]
            keys[scope] = await harness.key(await harness.user(f"lacks-{len(keys)}", others))
        key = keys[scope]
        for headers in (api_key(key), bearer(key)):
            response = await call(harness.client, route, headers)
            if response.status_code != 403 or error_of(response)[0] != "forbidden":
                wrong[f"{route[0]} {route[1]}"] = response.status_code
            elif scope not in response.headers["www-authenticate"]:
                wrong[f"{route[0]} {route[1]}"] = "no insufficient_scope challenge"
    assert not wrong


async def test_the_needed_scope_is_enough(harness: Harness) -> None:
    wrong = {}
    keys: dict[str | None, str] = {}
    for route, scope in PROTECTED.items():
        if scope not in keys:
            user = await harness.user(f"has-{len(keys)}", [scope] if scope else [])
            keys[scope] = await harness.key(user)
        key = keys[scope]
        response = await call(harness.client, route, api_key(key))
        if response.status_code in (401, 403):
            wrong[f"{route[0]} {route[1]}"] = response.text
    assert not wrong


async def test_admin_implies_every_scope(harness: Harness) -> None:
    admin = await harness.user("root", ["admin"])
    token = await harness.login("root")
    results = await statuses(harness.client, bearer(token))
    assert all(r.status_code not in (401, 403) for r in results.values())
    assert admin.scopes == ["admin"]


@pytest.mark.parametrize("credential", ["token", "key"])
async def test_disabled_user_is_403_everywhere(harness: Harness, credential: str) -> None:
    user = await harness.user("mallory", ["admin"])
    headers = (
        bearer(await harness.login("mallory"))
        if credential == "token"
        else api_key(await harness.key(user))
    )
    assert (await harness.client.get("/v1/users/me", headers=headers)).status_code == 200
    await harness.accounts.update_user(user.id, disabled=True)
    results = await statuses(harness.client, headers)
    wrong = {
        f"{m} {p}": r.status_code
        for (m, p), r in results.items()
        if r.status_code != 403 or "disabled" not in error_of(r)[1]
    }
    assert not wrong


async def test_open_routes_need_nothing(harness: Harness) -> None:
    for method, path in sorted(OPEN):
        if path == "/v1/token":
            continue
        response = await harness.client.request(method, path)
        assert response.status_code not in (401, 403), (method, path)


async def test_openapi_offers_both_schemes_for_the_authorize_button(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/v1/token"
    assert set(schemes["OAuth2PasswordBearer"]["flows"]["password"]["scopes"]) == {
        "predict",
        "models:read",
        "feedback",
        "metrics:read",
        "admin",
    }
    assert schemes["APIKeyHeader"] == {
        **schemes["APIKeyHeader"],
        "in": "header",
        "name": "X-API-Key",
    }
    paths = document["paths"]
    predict = paths["/v1/models/{model}/predict"]["post"]["security"]
    assert {"OAuth2PasswordBearer": ["predict"]} in predict
    assert any("APIKeyHeader" in requirement for requirement in predict)
    assert "security" not in paths["/health"]["get"]
    assert "security" not in paths["/v1/token"]["post"]
    assert "401" in paths["/v1/models"]["get"]["responses"]
