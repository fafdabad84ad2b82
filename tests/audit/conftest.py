"""An app serving the bundled models with authentication on, on SQLite and PostgreSQL, and
callers: users with API keys and stateless tokens (which keep working while the database
is down)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from fastapi import FastAPI

from mlgate.audit.service import AuditService
from tests.conftest import TEST_JWT_SECRET, make_settings, running_app

ROW = [0.5] * 77
READING = {
    "temperature": 89.4,
    "vibration": 0.21,
    "pressure": 0.05,
    "flow_rate": 125.7,
    "current": 2.5,
}


@dataclass
class Caller:
    """A user and the credentials it can call with."""

    user_id: int
    username: str
    key: str
    key_id: int
    token: str

    @property
    def with_key(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    @property
    def with_token(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class AuditApp:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def audit(self) -> AuditService:
        audit: AuditService = self.app.state.mlgate.audit
        return audit

    async def caller(
        self,
        username: str,
        scopes: list[str] | None = None,
        *,
        key_scopes: list[str] | None = None,
        **key_fields: Any,
    ) -> Caller:
        accounts = self.app.state.mlgate.accounts
        scopes = ["predict", "models:read", "feedback"] if scopes is None else scopes
        user = await accounts.create_user(username, password=None, scopes=scopes)
        created = await accounts.create_key(user.id, name="tests", scopes=key_scopes, **key_fields)
        now = int(time.time())
        settings = self.app.state.settings.auth
        token = jwt.encode(
            {
                "sub": user.username,
                "uid": user.id,
                "scope": " ".join(scopes),
                "tier": user.tier,
                "iat": now,
                "exp": now + 600,
                "jti": f"t{user.id}",
                "iss": settings.jwt_issuer,
                "aud": settings.jwt_audience,
            },
            TEST_JWT_SECRET,
            algorithm="HS256",
        )
        return Caller(user.id, user.username, created.plaintext, created.key.id, token)

    async def predict(
        self, caller: Caller, model: str, rows: list[Any], *, headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Score ``rows`` in one batch request; the per-row answers (with their ids)."""
        response = await self.client.post(
            f"/v1/models/{model}/predict/batch",
            json={"instances": rows},
            headers=headers or caller.with_key,
        )
        assert response.status_code == 200, response.text
        predictions: list[dict[str, Any]] = response.json()["predictions"]
        return predictions

    async def list_all(self, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
        """Every page of ``GET /v1/predictions``."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = await self.client.get("/v1/predictions", params=query, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            items += body["predictions"]
            cursor = body["next_cursor"]
            if cursor is None:
                return items


AppFactory = Callable[..., Any]


@pytest.fixture
def audit_repo(model_repo: Path) -> Path:
    """The bundled models with `ids` stable on version 1 (no calibration) and version 2
    (calibrated) beside it, as the quality tests compare them."""
    model_file = model_repo / "ids" / "model.yaml"
    spec = yaml.safe_load(model_file.read_text())
    spec["aliases"] = {"stable": "1"}
    model_file.write_text(yaml.safe_dump(spec))
    return model_repo


@pytest.fixture
def audit_app(database: dict[str, Any], audit_repo: Path) -> AppFactory:
    """``async with audit_app(**settings) as a``: the bundled models (`ids` stable on 1),
    authentication on, on this test's database (SQLite, then PostgreSQL)."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[AuditApp]:
        auth = {"anonymous_enabled": False, **overrides.pop("auth", {})}
        audit = {"flush_interval_s": 0.05, **overrides.pop("audit", {})}
        models = {"repository": audit_repo, **overrides.pop("models", {})}
        settings = make_settings(**database, auth=auth, audit=audit, models=models, **overrides)
        async with running_app(settings) as (app, client):
            yield AuditApp(app, client)

    return factory


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    """Wait until ``check()`` is true (polling), failing after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
