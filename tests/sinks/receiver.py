"""A webhook receiver for tests: a raw asyncio HTTP/1.1 server that checks each
delivery's signature the way the README tells receivers to, and can be killed and
brought back on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    genuine: bool

    @property
    def detections(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["detections"])


@dataclass
class Receiver:
    secret: bytes
    delay_s: float = 0.0
    """Wait this long before answering (a slow receiver)."""
    tolerance_s: float = 300.0
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mlgate"

    def genuine(self, headers: dict[str, str], body: bytes) -> bool:
        """Signature over "<timestamp>.<body>" with the shared secret, fresh timestamp."""
        timestamp = headers.get("x-mlgate-timestamp", "")
        signature = headers.get("x-mlgate-signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > self.tolerance_s:
            return False
        expected = hmac.new(self.secret, f"{timestamp}.".encode() + body, hashlib.sha256)
        return hmac.compare_digest(f"sha256={expected.hexdigest()}", signature)

    def event_ids(self) -> list[str]:
        """The detection ids of every genuine delivery, in arrival order."""
        return [d["event"]["id"] for x in self.deliveries if x.genuine for d in x.detections]

    async def start(self) -> None:
        """Listen (on the same port as before, after a kill)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def kill(self) -> None:
        """Stop listening and drop every connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                genuine = self.genuine(headers, body)
                # Recorded and answered with no await in between: a kill cannot separate them.
                self.deliveries.append(Delivery(headers, body, genuine))
                status = b"200 OK" if genuine else b"401 Unauthorized"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
