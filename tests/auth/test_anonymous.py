"""Anonymous access (off by default): callers without credentials become a principal
identified by their IP address, with the configured scopes and tier."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import Request
from pydantic import ValidationError

from mlgate.api.deps import PrincipalDep
from mlgate.auth.principal import Principal
from mlgate.settings import AuthSettings
from tests.auth.conftest import bearer

ANONYMOUS = {"anonymous_enabled": True, "anonymous_tier": "pro"}


async def test_off_by_default(harness_factory: Any) -> None:
    assert AuthSettings().anonymous_enabled is False
    async with harness_factory() as h:
        assert (await h.client.get("/v1/models")).status_code == 401


async def test_anonymous_caller_is_identified_by_ip(harness_factory: Any) -> None:
    async with harness_factory(auth=ANONYMOUS) as h:
        assert (await h.client.get("/v1/models")).status_code == 200
        me = (await h.client.get("/v1/users/me")).json()
        assert me["kind"] == "anonymous"
        assert me["subject"] == "127.0.0.1"
        assert me["tier"] == "pro"
        assert me["scopes"] == ["models:read", "predict"]
        assert me["user"] is None


async def test_anonymous_is_not_admin(harness_factory: Any) -> None:
    async with harness_factory(auth=ANONYMOUS) as h:
        response = await h.client.post("/v1/admin/models/reload")
        assert response.status_code == 403
        assert (await h.client.get("/v1/admin/users")).status_code == 403
    with pytest.raises(ValidationError, match="admin"):
        AuthSettings(anonymous_scopes=["predict", "admin"])
    with pytest.raises(ValidationError, match="anonymous_tier"):
        AuthSettings(anonymous_tier="platinum")


async def test_bad_credentials_are_not_downgraded_to_anonymous(harness_factory: Any) -> None:
    async with harness_factory(auth=ANONYMOUS) as h:
        for headers in (
            bearer("garbage"),
            {"X-API-Key": "mlg_nope"},
            {"X-API-Key": ""},
            {"Authorization": "Basic x"},
            {"Authorization": "Bearer"},
        ):
            assert (await h.client.get("/v1/models", headers=headers)).status_code == 401


async def test_the_principal_is_left_on_the_request_state(harness_factory: Any) -> None:
    """What the rate limiter and the audit log read."""
    seen: list[Principal] = []

    async with harness_factory(auth=ANONYMOUS) as h:

        @h.app.get("/probe")
        async def probe(request: Request, principal: PrincipalDep) -> dict[str, str]:
            seen.append(request.state.principal)
            assert request.state.principal is principal
            return {}

        assert (await h.client.get("/probe")).status_code == 200
    (principal,) = seen
    assert principal.kind == "anonymous" and principal.rate_limit_key == "ip:127.0.0.1"
    assert principal.tier == "pro" and dict(principal.rate_limit_overrides) == {}
