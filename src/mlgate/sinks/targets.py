"""Where detections are delivered: a signed HTTP webhook, an ECS JSON-lines file."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import orjson

from mlgate.sinks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


class DeliveryRefused(Exception):
    """The receiver refused the batch for good (a 4xx other than 408/425/429): retrying
    the same bytes cannot succeed."""


class Sink(Protocol):
    """Delivers a batch of detection documents; raises to have it retried (any error)
    or dropped (:class:`DeliveryRefused`)."""

    name: str

    async def deliver(self, documents: list[dict[str, Any]], delivery_id: str) -> None: ...

    async def close(self) -> None: ...


_RETRYABLE_4XX = {408, 425, 429}


class WebhookSink:
    """POSTs ``{"detections": [...]}`` with the signature headers (see :mod:`.signing`)."""

    name = "webhook"

    def __init__(self, url: str, secret: bytes, timeout_s: float) -> None:
        import httpx  # ~0.1 s to import: only servers that deliver to a webhook pay it

        self.url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def deliver(self, documents: list[dict[str, Any]], delivery_id: str) -> None:
        body = orjson.dumps({"detections": documents})
        timestamp = str(int(time.time()))
        response = await self._client.post(
            self.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
                DELIVERY_HEADER: delivery_id,
            },
        )
        status = response.status_code
        if 200 <= status < 300:
            return
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise DeliveryRefused(f"webhook answered {status}")
        import httpx

        raise httpx.HTTPStatusError(
            f"webhook answered {status}", request=response.request, response=response
        )

    async def close(self) -> None:
        await self._client.aclose()


class EcsFileSink:
    """Appends one JSON document per line. The file is opened for each batch, so a log
    rotation that moves it away is followed at the next batch."""

    name = "ecs_file"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def deliver(self, documents: list[dict[str, Any]], delivery_id: str) -> None:
        data = b"".join(orjson.dumps(d) + b"\n" for d in documents)
        await anyio.to_thread.run_sync(self._append, data)

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(data)

    async def close(self) -> None:
        """Nothing held open."""


def new_delivery_id() -> str:
    return uuid.uuid4().hex
