"""The connection guards of `mlgate serve`, on a real server over raw sockets: request-head
size, header/body/idle timeouts, the connection cap, lingering close, graceful shutdown."""

from __future__ import annotations

import json
import select
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.rawhttp import closed_by_server, connect, get, read_response
from tests.servers import RunningServer, clean_env, mlgate_serve

pytestmark = pytest.mark.slow

HEAD_LIMIT = 32 * 1024  # the default MLGATE_SERVER__MAX_HEADER_BYTES
MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with short timeouts and a small connection cap; anonymous callers may
    predict, so that request bodies are read."""
    env = clean_env(
        MLGATE_SERVER__HEADER_TIMEOUT_S="1",
        MLGATE_SERVER__BODY_TIMEOUT_S="2",
        MLGATE_SERVER__KEEP_ALIVE_TIMEOUT_S="1",
        MLGATE_SERVER__MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_RATE_LIMIT__ENABLED="false",
    )
    with mlgate_serve(tmp_path_factory.mktemp("guarded"), env) as running:
        yield running


def _still_answers(server: RunningServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(get())
        assert read_response(sock).status == 200


# -- request-head size (431) ---------------------------------------------------------------


def test_a_head_over_the_limit_is_refused_before_it_ends(server: RunningServer) -> None:
    with connect(server.port, timeout_s=5) as sock:
        # An unauthenticated bearer header that never ends: only a server that refuses
        # early (before authentication, before the end of the head) can answer.
        sock.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: mlgate.test\r\nAuthorization: Bearer eyJ"
            + b"a" * (HEAD_LIMIT + 1024)
        )
        response = read_response(sock)
    assert response.status == 431
    assert response.headers["connection"] == "close"
    error = response.json()["error"]
    assert error["code"] == "headers_too_large"
    assert error["details"] == {"limit_bytes": HEAD_LIMIT}
    assert error["request_id"] == response.headers["x-request-id"]
    _still_answers(server)


def test_a_64_mib_header_written_in_full_gets_the_431(server: RunningServer) -> None:
    # The client writes all of it before reading (as most clients do): it must still
    # receive the answer, not a connection reset.
    with connect(server.port, timeout_s=30) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: mlgate.test\r\nX-Big: ")
        chunk = b"a" * (1 << 20)
        for _ in range(64):
            sock.sendall(chunk)
        sock.sendall(b"\r\n\r\n")
        response = read_response(sock)
    assert response.status == 431
    _still_answers(server)


def test_a_request_line_over_the_limit_gets_431(server: RunningServer) -> None:
    with connect(server.port, timeout_s=5) as sock:
        sock.sendall(b"GET /health/live?" + b"q" * (HEAD_LIMIT + 10) + b" HTTP/1.1\r\n\r\n")
        assert read_response(sock).status == 431


def test_a_head_within_the_limit_sent_in_pieces_is_served(server: RunningServer) -> None:
    head = get(extra=f"X-Fill: {'f' * (HEAD_LIMIT - 1024)}\r\n")
    with connect(server.port) as sock:
        for start in range(0, len(head), 4096):
            sock.sendall(head[start : start + 4096])
        response = read_response(sock)
        assert response.status == 200
        sock.sendall(get())  # the connection is still usable
        assert read_response(sock).status == 200


# -- timeouts (408) and idle connections ----------------------------------------------------


def test_a_new_connection_that_sends_nothing_is_closed(server: RunningServer) -> None:
    with connect(server.port, timeout_s=5) as sock:
        assert closed_by_server(sock)


def test_a_head_that_does_not_end_in_time_gets_408(server: RunningServer) -> None:
    with connect(server.port, timeout_s=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: mlgate.test\r\n")
        response = read_response(sock)
        assert closed_by_server(sock)
    assert response.status == 408
    assert response.json()["error"]["code"] == "request_timeout"
    assert "headers" in response.json()["error"]["message"]


def test_a_body_sent_a_byte_at_a_time_gets_408(server: RunningServer) -> None:
    with connect(server.port, timeout_s=5) as sock:
        sock.sendall(
            b"POST /v1/models/ids/predict HTTP/1.1\r\nHost: mlgate.test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            if select.select([sock], [], [], 0.25)[0]:
                break  # the server answered
            sock.sendall(b" ")
        response = read_response(sock)
    assert response.status == 408
    assert "body" in response.json()["error"]["message"]
    _still_answers(server)


def test_an_idle_kept_alive_connection_is_closed(server: RunningServer) -> None:
    with connect(server.port, timeout_s=4) as sock:
        sock.sendall(get())
        response = read_response(sock)
        assert response.status == 200 and "connection" not in response.headers
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started < 3.5  # the configured 1 s, not uvicorn's 5 s


# -- connection cap (503) -------------------------------------------------------------------


def test_a_connection_over_the_cap_gets_503(server: RunningServer) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(server.port, timeout_s=5) as extra:
            extra.sendall(get())
            response = read_response(extra)
    finally:
        for sock in held:
            sock.close()
    assert response.status == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "too_many_connections"


# -- oversized bodies: lingering close (413) ------------------------------------------------


@pytest.mark.parametrize(
    ("chunked", "mib"), [(False, 12), (True, 32)], ids=["content-length", "chunked"]
)
def test_a_client_that_writes_a_big_body_before_reading_gets_the_413(
    server: RunningServer, chunked: bool, mib: int
) -> None:
    # Over the 8 MiB limit. A chunked body has no Content-Length: it is refused once 8 MiB
    # were read, and the rest (here 24 MiB) must still be read and dropped.
    body = b'{"features": [' + b"1," * (mib * 512 * 1024) + b"1]}"
    data: bytes | list[bytes] = (
        [body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)] if chunked else body
    )
    request = urllib.request.Request(
        f"{server.url}/v1/models/ids/predict",
        data=data,  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    with info.value as answer:
        assert answer.code == 413
        assert json.loads(answer.read())["error"]["code"] == "payload_too_large"
    _still_answers(server)


# -- graceful shutdown ---------------------------------------------------------------------


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_request_on_a_kept_alive_connection_during_shutdown_is_answered(
    tmp_path: Path,
) -> None:
    env = clean_env(MLGATE_SERVER__KEEP_ALIVE_TIMEOUT_S="3")
    with mlgate_serve(tmp_path, env) as running, connect(running.port) as sock:
        sock.sendall(get())
        assert read_response(sock).status == 200
        running.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _refused(running.port):  # the server stopped listening: it is stopping
            assert time.monotonic() < deadline, "the server did not start shutting down"
            time.sleep(0.05)
        # The client still believes its kept-alive connection open and sends a request.
        sock.sendall(get())
        response = read_response(sock)
        assert response.status == 200
        assert response.headers["connection"] == "close"
        assert closed_by_server(sock)
        running.process.wait(timeout=15)


# -- the normal path still works ------------------------------------------------------------


def test_pipelined_requests_are_all_answered_in_order(server: RunningServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(get("/health/live") + get("/health") + get("/health/live"))
        statuses = [read_response(sock) for _ in range(3)]
    assert [r.status for r in statuses] == [200, 200, 200]
    assert "uptime_seconds" in statuses[1].json()


def test_a_kept_alive_connection_carries_on_after_an_early_413(server: RunningServer) -> None:
    body = b"x" * (9 * 1024 * 1024)  # over the 8 MiB limit: answered before it is read
    with connect(server.port, timeout_s=30) as sock:
        sock.sendall(
            b"POST /v1/models/ids/predict HTTP/1.1\r\nHost: mlgate.test\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert read_response(sock).status == 413
        sock.sendall(get())  # the rest of the body was read and dropped
        assert read_response(sock).status == 200


def test_an_early_413_to_a_client_awaiting_100_continue_closes_at_once(
    server: RunningServer,
) -> None:
    with connect(server.port, timeout_s=1.5) as sock:  # less than the 2 s body timeout
        sock.sendall(
            b"POST /v1/models/ids/predict HTTP/1.1\r\nHost: mlgate.test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert read_response(sock).status == 413
        # The client will not send a body it was not invited to send: no waiting for it.
        assert closed_by_server(sock)
