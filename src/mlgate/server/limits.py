"""The per-connection limits of the HTTP server, taken from the server settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlgate.settings import ServerSettings


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost the server (picklable: uvicorn hands it to workers)."""

    max_head_bytes: int
    """Request line plus headers; more is answered 431."""
    header_timeout_s: float
    """From connecting (or from the first byte of a later request) to the end of its head."""
    body_timeout_s: float
    """From the end of a request's head to the end of its body."""
    keep_alive_timeout_s: float
    """An idle connection between two requests is closed after this."""
    max_connections: int
    """Open connections of one worker; more are answered 503 and closed."""
    max_discard_bytes: int
    """Input read and thrown away after a refusal, so that the client can read it."""

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            max_head_bytes=server.max_header_bytes,
            header_timeout_s=server.header_timeout_s,
            body_timeout_s=server.body_timeout_s,
            keep_alive_timeout_s=server.keep_alive_timeout_s,
            max_connections=server.max_connections,
            max_discard_bytes=server.max_discard_bytes,
        )
