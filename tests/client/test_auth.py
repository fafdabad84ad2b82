"""Credentials: from arguments or the environment; an API key, or a username and
password whose access token is fetched once, renewed before it expires, and fetched
again when the server refuses it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.client.conftest import (
    BASE_URL,
    BridgeTransport,
    InProcessServer,
    Recorder,
    serve_in_thread,
    sqlite_url,
)
from tests.conftest import make_settings

from mlgate.client import AsyncClient, AuthenticationError, Client

PASSWORD = "correct-horse-battery-staple"


def _user_with_password(server: InProcessServer, name: str) -> None:
    with Client(BASE_URL, api_key=server.admin_key, transport=BridgeTransport(server)) as c:
        c.admin.create_user(name, password=PASSWORD, scopes=["predict", "models:read"])


def _bearers(recorder: Recorder) -> list[str]:
    return [
        e.headers["authorization"].removeprefix("Bearer ")
        for e in recorder.log
        if "authorization" in e.headers
    ]


def test_url_and_key_come_from_the_environment(
    server: InProcessServer, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLGATE_URL", "http://from-the-env.test/")
    monkeypatch.setenv("MLGATE_API_KEY", server.admin_key)
    with Client(transport=recorder) as c:
        assert c.base_url == "http://from-the-env.test"
        assert c.whoami().subject == "test-admin"
    assert recorder.log[0].headers["x-api-key"] == server.admin_key
    # Arguments win over the environment.
    with (
        Client("http://mlgate.test", api_key="mlg_bad", transport=recorder) as c,
        pytest.raises(AuthenticationError),
    ):
        c.whoami()


def test_a_password_is_exchanged_for_one_token(server: InProcessServer, recorder: Recorder) -> None:
    _user_with_password(server, "alice")
    with Client(BASE_URL, username="alice", password=PASSWORD, transport=recorder) as c:
        assert c.whoami().subject == "alice"
        c.predict("ids", [0.0] * 77)
        c.predict_batch("ids", [[0.0] * 77] * 250, concurrency=3)  # three chunks at once
    assert len(recorder.to("/v1/token")) == 1
    assert len(set(_bearers(recorder))) == 1
    with (
        Client(BASE_URL, username="alice", password="wrong-password", transport=recorder) as c,
        pytest.raises(AuthenticationError),
    ):
        c.whoami()
    assert len(recorder.to("/v1/token")) == 2, "a refused login is not retried"


@pytest.fixture
def short_tokens(tmp_path: Path) -> Iterator[InProcessServer]:
    """Tokens that live 2 s, and no leeway for clock skew. (The setting's floor is 60 s
    for operators; the tests set the field past validation to keep the wait short.)"""
    settings = make_settings(database_url=sqlite_url(tmp_path), auth={"jwt_leeway_s": 0})
    settings.auth.access_token_ttl_s = 2
    with serve_in_thread(settings) as running:
        _user_with_password(running, "bob")
        yield running


def test_the_token_is_renewed_before_it_expires(short_tokens: InProcessServer) -> None:
    recorder = Recorder(BridgeTransport(short_tokens))
    with Client(BASE_URL, username="bob", password=PASSWORD, transport=recorder) as c:
        c.whoami()
        time.sleep(2.2)  # the first token has expired on the server now
        assert c.whoami().subject == "bob"
    first, second = _bearers(recorder)[0], _bearers(recorder)[-1]
    assert first != second and len(recorder.to("/v1/token")) == 2
    # No request was refused: the new token was fetched before the old one was used.
    assert all(e.status == 200 for e in recorder.log)
    expired = httpx.Client(transport=BridgeTransport(short_tokens), base_url=BASE_URL)
    refused = expired.get("/v1/users/me", headers={"Authorization": f"Bearer {first}"})
    assert refused.status_code == 401 and "expired" in refused.text


async def test_the_async_client_renews_the_same_way(short_tokens: InProcessServer) -> None:
    recorder = Recorder(BridgeTransport(short_tokens))
    async with AsyncClient(BASE_URL, username="bob", password=PASSWORD, transport=recorder) as c:
        # Concurrent calls share one login.
        await asyncio.gather(*(c.whoami() for _ in range(5)))
        await asyncio.sleep(2.2)
        await asyncio.gather(*(c.predict("ids", [0.0] * 77) for _ in range(5)))
    assert len(recorder.to("/v1/token")) == 2
    assert all(e.status == 200 for e in recorder.log)


@dataclass
class Switch(httpx.BaseTransport):
    """Sends to one server, then (after ``target`` changes) to another."""

    target: httpx.BaseTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.target.handle_request(request)


def test_a_refused_token_is_replaced_once(tmp_path: Path) -> None:
    # The server restarts with a new signing secret: tokens it issued before are refused
    # (401 invalid_token) although the client thinks they are fresh.
    url = sqlite_url(tmp_path)
    with serve_in_thread(make_settings(database_url=url)) as before:
        _user_with_password(before, "carol")
        switch = Switch(BridgeTransport(before))
        recorder = Recorder(switch)
        client = Client(BASE_URL, username="carol", password=PASSWORD, transport=recorder)
        client.whoami()
        other = make_settings(database_url=url, auth={"jwt_secret": "another-" + "s" * 40})
        with serve_in_thread(other, admin="second-admin") as after:
            switch.target = BridgeTransport(after)
            assert client.whoami().subject == "carol"
        client.close()
    assert [(e.path, e.status) for e in recorder.log] == [
        ("/v1/token", 200),
        ("/v1/users/me", 200),
        ("/v1/users/me", 401),
        ("/v1/token", 200),
        ("/v1/users/me", 200),
    ]
