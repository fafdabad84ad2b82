"""Raw-socket HTTP for tests that need what an HTTP client library hides: half-sent
heads, slow bodies, idle connections, several requests on one connection."""

from __future__ import annotations

import json
import socket
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@contextmanager
def connect(port: int, timeout_s: float = 10) -> Iterator[socket.socket]:
    """A TCP connection to the server on 127.0.0.1, closed afterwards."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    try:
        yield sock
    finally:
        sock.close()


#: Bytes read past the end of a response (the next pipelined response), per socket.
_leftover: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> RawResponse:
    """One response (with a Content-Length) from the socket; raises on EOF before it ends.
    What arrives after it (pipelined responses come in one read) is kept for the next."""
    buffer = _leftover.pop(sock, b"")
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response head: {buffer!r}")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a response body")
        rest += chunk
    if len(rest) > length:
        _leftover[sock] = rest[length:]
    return RawResponse(int(status_line.split()[1]), headers, rest[:length])


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (EOF or reset); waits up to the socket timeout."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def get(path: str = "/health/live", *, extra: str = "") -> bytes:
    """A keep-alive GET request."""
    return f"GET {path} HTTP/1.1\r\nHost: mlgate.test\r\n{extra}\r\n".encode()
