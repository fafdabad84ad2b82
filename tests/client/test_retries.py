"""What the client repeats, and for how long: 429 and 503 (honouring Retry-After) and
transport failures, for calls that are safe to repeat; never a 4xx; bounded by attempts
and by total time.

The server's real 429s come from its rate limiter (a key allowed one request a
second). Exact sequences of 503 answers and of broken connections mid-request cannot be
provoked from a healthy server on demand, so those tests script the answers with
``httpx.MockTransport`` - the transport the client is built to take.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.client.conftest import (
    BASE_URL,
    FAST_RETRY,
    BridgeTransport,
    InProcessServer,
    Recorder,
    serve_in_thread,
    sqlite_url,
)
from tests.conftest import make_settings
from tests.servers import free_port

from mlgate.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    RateLimited,
    RetryPolicy,
    ServerUnavailable,
)

ONE_PER_SECOND = {"requests_per_minute": 60, "burst": 1}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """An app whose rate limits are on (memory limiter)."""
    settings = make_settings(
        database_url=sqlite_url(tmp_path_factory.mktemp("limited-db")),
        rate_limit={"enabled": True},
    )
    with serve_in_thread(settings) as running:
        yield running


def _slow_admin(server: InProcessServer, name: str) -> str:
    """An admin key the rate limiter lets through once a second."""
    with Client(BASE_URL, api_key=server.admin_key, transport=BridgeTransport(server)) as c:
        user = c.admin.create_user(name, scopes=["admin"])
        key = c.admin.create_key("slow", user_id=user.id, rate_limit_overrides=ONE_PER_SECOND)
    assert key.key is not None
    return key.key


def test_a_429_is_retried_after_retry_after(limited: InProcessServer) -> None:
    recorder = Recorder(BridgeTransport(limited))
    with Client(BASE_URL, api_key=_slow_admin(limited, "slow-1"), transport=recorder) as c:
        c.health()  # open, costs nothing
        assert c.info().max_batch_rows > 0
        c.predict("ids", [0.0] * 77)  # at once: over the limit, then admitted
    statuses = [(e.path, e.status) for e in recorder.log if e.path != "/health"]
    assert statuses == [
        ("/info", 200),
        ("/v1/models/ids/predict", 429),
        ("/v1/models/ids/predict", 200),
    ]
    refused, admitted = recorder.log[-2], recorder.log[-1]
    # Retry-After is 1 (whole seconds): the retry waited at least that long.
    assert admitted.sent_at - refused.sent_at >= 1.0


def test_state_changing_admin_calls_are_not_retried_on_429(limited: InProcessServer) -> None:
    recorder = Recorder(BridgeTransport(limited))
    with Client(BASE_URL, api_key=_slow_admin(limited, "slow-2"), transport=recorder) as c:
        created = c.admin.create_user("made-once")
        with pytest.raises(RateLimited) as caught:
            c.admin.create_key("k", user_id=created.id)  # a repeat would make a second key
        assert caught.value.retry_after == 1
        assert len(recorder.to("/v1/admin/api-keys")) == 1
        # Revoking is idempotent: retried through the 429.
        with Client(BASE_URL, api_key=limited.admin_key, transport=BridgeTransport(limited)) as a:
            key = a.admin.create_key("k", user_id=created.id)
        time.sleep(1.0)  # the slow key's allowance comes back
        c.admin.get_user(created.id)
        assert c.admin.revoke_key(key.id).status == "revoked"
    deletes = [e.status for e in recorder.log if e.method == "DELETE"]
    assert deletes == [429, 200]


def _scripted(
    answers: list[httpx.Response | type[Exception]],
) -> tuple[httpx.MockTransport, list[str]]:
    """A transport giving ``answers`` in order (an exception class is raised); it records
    the paths asked for."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, type):
            raise answer("scripted failure", request=request)
        # A fresh response each time (one may be given many times, to either client).
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.MockTransport(handler), seen


def _unavailable(retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": "overloaded", "message": "busy", "request_id": "r", "details": None}}
    return httpx.Response(503, json=body, headers=headers)


INFO = httpx.Response(200, json={"max_batch_rows": 1000})
HEALTHY = httpx.Response(200, json={"status": "healthy", "version": "x", "models_loaded": []})


def test_503_is_retried_until_it_answers() -> None:
    transport, seen = _scripted([_unavailable(), _unavailable("0"), HEALTHY])
    with Client(BASE_URL, transport=transport, retry=FAST_RETRY) as c:
        assert c.health().healthy
    assert seen == ["/health"] * 3


def test_attempts_are_bounded() -> None:
    transport, seen = _scripted([_unavailable()])
    policy = RetryPolicy(max_attempts=3, backoff_base_s=0.001)
    with Client(BASE_URL, transport=transport, retry=policy) as c, pytest.raises(ServerUnavailable):
        c.health()
    assert len(seen) == 3


def test_a_wait_past_the_time_budget_is_not_started() -> None:
    transport, seen = _scripted([_unavailable("30")])
    policy = RetryPolicy(max_attempts=5, max_elapsed_s=5)
    started = time.monotonic()
    with (
        Client(BASE_URL, transport=transport, retry=policy) as c,
        pytest.raises(ServerUnavailable) as caught,
    ):
        c.health()
    assert caught.value.retry_after == 30
    assert len(seen) == 1 and time.monotonic() - started < 5


def test_retry_after_is_honoured_on_503() -> None:
    transport, seen = _scripted([_unavailable("1"), HEALTHY])
    started = time.monotonic()
    with Client(BASE_URL, transport=transport) as c:
        c.health()
    assert len(seen) == 2 and time.monotonic() - started >= 1.0


def test_a_broken_connection_repeats_only_what_is_safe_to_repeat() -> None:
    ok_user = httpx.Response(
        201,
        json={
            "id": 1,
            "username": "u",
            "disabled": False,
            "tier": "free",
            "scopes": [],
            "has_password": False,
            "rate_limit_overrides": None,
        },
    )
    # The request may have reached the server before the connection broke.
    transport, seen = _scripted([httpx.ReadError, ok_user])
    with (
        Client(BASE_URL, transport=transport, retry=FAST_RETRY) as c,
        pytest.raises(ConnectionFailed),
    ):
        c.admin.create_user("u")
    assert seen == ["/v1/admin/users"]
    transport, seen = _scripted([httpx.ReadError, httpx.RemoteProtocolError, HEALTHY])
    with Client(BASE_URL, transport=transport, retry=FAST_RETRY) as c:
        assert c.health().healthy
    assert len(seen) == 3


def test_a_server_that_is_not_there(tmp_path: Path) -> None:
    # A port nobody listens on: the connection is refused each time, nothing was sent,
    # so even a state-changing call is repeated, up to the attempt bound.
    url = f"http://127.0.0.1:{free_port()}"
    recorder = Recorder(httpx.HTTPTransport())
    with Client(url, transport=recorder, retry=FAST_RETRY) as c, pytest.raises(ConnectionFailed):
        c.admin.create_user("nobody")
    assert [e.status for e in recorder.log] == [None] * FAST_RETRY.max_attempts


async def test_the_async_client_retries_the_same_way() -> None:
    transport, seen = _scripted([_unavailable("0"), httpx.ConnectError, HEALTHY])
    async with AsyncClient(BASE_URL, transport=transport, retry=FAST_RETRY) as c:
        assert (await c.health()).healthy
    assert len(seen) == 3
    transport, seen = _scripted([_unavailable()])
    async with AsyncClient(BASE_URL, transport=transport, retry=FAST_RETRY) as c:
        with pytest.raises(ServerUnavailable):
            await c.health()
    assert len(seen) == FAST_RETRY.max_attempts
