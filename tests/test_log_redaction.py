"""Logs never carry credentials: a key or token a client put in a query string (which the
API refuses: it reads credentials from headers only) is redacted in the access log."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from mlgate.logs import REDACTED, redact_target
from tests.servers import clean_env, mlgate_serve

FAKE_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWEtdG9rZW4"


@pytest.mark.slow
def test_credentials_in_a_query_string_are_redacted_in_the_access_log(tmp_path: Path) -> None:
    env = clean_env(MLGATE_OBSERVABILITY__ACCESS_LOG="true")
    with mlgate_serve(tmp_path, env, log_level="info") as running:
        admin = re.findall(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", running.log.read_text())[0]
        created = httpx.post(
            f"{running.url}/v1/admin/api-keys",
            json={"username": "admin", "name": "leaky"},
            headers={"X-API-Key": admin},
            timeout=10,
        ).json()
        key = created["key"]
        for params in (
            {"api_key": key, "version": "2"},
            {"access_token": FAKE_JWT},
            {"password": "hunter2-correct-horse"},
            {"q": key},  # a key under any name
        ):
            response = httpx.get(f"{running.url}/v1/models", params=params, timeout=10)
            assert response.status_code == 401  # query-string credentials are not accepted
        httpx.get(f"{running.url}/v1/models/{key}", timeout=10)  # ... nor in a path
    log = running.log.read_text()
    assert "version=2" in log and f"api_key={REDACTED}" in log  # the access log is on
    secret_part = key.split("_", 2)[2]
    for leaked in (key, secret_part, FAKE_JWT, "hunter2-correct-horse"):
        assert leaked not in log


@pytest.mark.parametrize(
    ("target", "redacted"),
    [
        ("/v1/models?api_key=abc&version=2", f"/v1/models?api_key={REDACTED}&version=2"),
        ("/x?X-API-Key=abc&Access_Token=def", f"/x?X-API-Key={REDACTED}&Access_Token={REDACTED}"),
        (f"/x?next={FAKE_JWT}", f"/x?next={REDACTED}"),
        ("/health/live", "/health/live"),
        ("/x?q=a%20b&flag", "/x?q=a%20b&flag"),
    ],
)
def test_redact_target(target: str, redacted: str) -> None:
    assert redact_target(target) == redacted
