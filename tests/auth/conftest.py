"""An app with authentication on (anonymous off), on SQLite and on PostgreSQL, and helpers
to make users, keys and tokens (valid or deliberately broken)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI

from mlgate.auth.accounts import Accounts
from mlgate.db.models import User
from tests.conftest import TEST_JWT_SECRET, make_settings, running_app

ALL_SCOPES = ["predict", "models:read", "feedback", "admin"]
PASSWORD = "correct horse battery staple"


@dataclass
class Harness:
    """A running app, a client without credentials, and ways to get credentials."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def accounts(self) -> Accounts:
        accounts: Accounts = self.app.state.mlgate.accounts
        return accounts

    @property
    def settings(self) -> Any:
        return self.app.state.settings

    async def user(
        self,
        username: str = "alice",
        scopes: list[str] | None = None,
        password: str | None = PASSWORD,
        **fields: Any,
    ) -> User:
        return await self.accounts.create_user(
            username,
            password=password,
            scopes=ALL_SCOPES[:3] if scopes is None else scopes,
            **fields,
        )

    async def key(self, user: User, scopes: list[str] | None = None, **fields: Any) -> str:
        created = await self.accounts.create_key(
            user.id, name=fields.pop("name", "test key"), scopes=scopes, **fields
        )
        return created.plaintext

    async def login(self, username: str = "alice", password: str = PASSWORD, **form: str) -> str:
        response = await self.client.post(
            "/v1/token", data={"username": username, "password": password, **form}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def claims(self, user: User, **overrides: Any) -> dict[str, Any]:
        """Claims that the app would accept, with ``overrides`` applied (None removes)."""
        auth = self.settings.auth
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user.username,
            "uid": user.id,
            "scope": " ".join(user.scopes),
            "tier": user.tier,
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_hex(8),
            "iss": auth.jwt_issuer,
            "aud": auth.jwt_audience,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def hs_token(self, user: User, secret: str = TEST_JWT_SECRET, **overrides: Any) -> str:
        return jwt.encode(self.claims(user, **overrides), secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def unsigned_token(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A token with ``alg: none`` and an empty signature."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.fixture(scope="session")
def rsa_key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private, public) PEM files of a 2048-bit RSA key."""
    return _write_pair(
        tmp_path_factory.mktemp("rsa"),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(scope="session")
def ed25519_key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_pair(tmp_path_factory.mktemp("ed25519"), ed25519.Ed25519PrivateKey.generate())


def _write_pair(directory: Path, private: Any) -> tuple[Path, Path]:
    private_file = directory / "private.pem"
    public_file = directory / "public.pem"
    private_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_file, public_file


@pytest.fixture
def harness_factory(database: dict[str, Any], tmp_path: Path) -> Callable[..., Any]:
    """``async with harness_factory(auth={...}) as h``: an app on this test's database with
    no models (authentication comes before them) and anonymous access off."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Harness]:
        auth = {"anonymous_enabled": False, **overrides.pop("auth", {})}
        models = {"repository": tmp_path / "no-models", **overrides.pop("models", {})}
        settings = make_settings(**database, auth=auth, models=models, **overrides)
        async with running_app(settings) as (app, client):
            yield Harness(app, client)

    return factory


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with harness_factory() as h:
        yield h
