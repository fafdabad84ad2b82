"""uvicorn's httptools protocol with the limits a server facing the network needs.

Left alone, uvicorn parses a request head of any size (a 64 MiB header cost seconds of
event-loop time and hundreds of MiB), never times out a slow head or body, keeps a new
connection that sends nothing open forever, closes a connection whose request body is
still arriving (the kernel then resets it, and a client that writes its whole body
before reading never sees the 413), and on shutdown closes idle kept-alive connections
at once, racing the request the client may be sending. Per connection, this subclass:

- bounds the request line plus headers: the parser is never fed more than
  ``max_head_bytes`` of a head; a longer head is answered 431 at once;
- times out a head (``header_timeout_s``, also a new connection that sends nothing) and a
  body (``body_timeout_s``, so 1-byte-a-second uploads end): 408, connection closed;
- caps open connections per worker (503 with ``Retry-After``);
- closes lingering: after a refusal, or after a response that ends the connection while
  the request body is still arriving, the rest of the input is read and thrown away (up
  to ``max_discard_bytes``, within the body timeout) before closing, as nginx does;
- shuts down gracefully: a request that arrives on an idle kept-alive connection during
  shutdown (before its idle timeout) is answered with ``Connection: close``.

The normal path costs a comparison per read: whole reads go to the parser unless one
would take a head past its bound, and timers are only armed when a head or body spans
several reads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from mlgate.api.errors import error_content
from mlgate.api.responses import dumps
from mlgate.errors import HeadersTooLarge, MlgateError, RequestTimeout, TooManyConnections
from mlgate.server.limits import ConnectionLimits

log = logging.getLogger("mlgate.server")


class _CycleTransport:
    """The transport as a request cycle sees it: ``close()`` first lets the protocol read
    what is left of the request body (closing with unread input resets the connection)."""

    def __init__(self, protocol: GuardedHttpProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport
        # The transport's own methods: no extra call on the path of every response.
        self.write = transport.write
        self.is_closing = transport.is_closing

    def close(self) -> None:
        self._protocol.close_after_request()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head, timeout, connection and closing guards."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.timeout_keep_alive = limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._head_bytes = 0  # bytes of the current head fed to the parser
        self._in_body = False  # between the end of a head and the end of its message
        self._body_arrived = False  # some of the current body was received
        self._heads = 0  # heads completed on this connection
        self._deadline: asyncio.TimerHandle | None = None
        self._discard_left: int | None = None  # set while lingering: input still accepted
        self._discard_raw = False  # lingering after a refusal: input is not even parsed
        self._close_after_body = False  # lingering ends with a close once the body ended
        self._draining = False  # the server is shutting down
        self._cycle_transport: _CycleTransport | None = None

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._cycle_transport = _CycleTransport(self, transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                TooManyConnections(
                    "the server has too many open connections: retry shortly",
                    headers={"Retry-After": "1"},
                ),
                level=logging.INFO,
            )
            return
        # A new connection has the header timeout to send its first request.
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discard_left is not None:
            self._discard(data)
            return
        if not self._in_body:
            room = self.limits.max_head_bytes - self._head_bytes
            if len(data) > room:
                self._feed_bounded(data, room)
                return
            # A read may also hold the body and even the next request; their bytes count
            # here until the message ends, which only makes the bound stricter.
            self._head_bytes += len(data)
        super().data_received(data)
        self._arm()

    def _feed_bounded(self, data: bytes, room: int) -> None:
        """Feed the parser no more of a head than fits; refuse if the head goes on."""
        heads = self._heads
        if room > 0:
            self._head_bytes += room
            super().data_received(data[:room])
            if self.transport.is_closing() or self._discard_left is not None:
                return
        if self._heads == heads:
            limit = self.limits.max_head_bytes
            self._refuse(
                HeadersTooLarge(
                    f"the request line and headers exceed the limit of {limit} bytes",
                    details={"limit_bytes": limit},
                )
            )
            return
        self.data_received(data[room:])

    # -- parser callbacks ------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return  # a pipelined request after the one that closes the connection
        self._heads += 1
        self._in_body = True
        self._body_arrived = False
        if self._deadline is not None:
            self._cancel_deadline()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:
            self.cycle.transport = cast(asyncio.Transport, self._cycle_transport)
            if self._draining:
                self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body_arrived = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._head_bytes = 0
        if self._deadline is not None:
            self._cancel_deadline()
        if self._discard_left is not None:  # the ignored rest of a body has arrived
            self._discard_left = None
            if self._close_after_body:
                self.transport.close()

    def on_response_complete(self) -> None:
        # The body being read belongs to the answered request, not to a pipelined one.
        current = self.cycle is not None and self.cycle.response_complete
        if (
            current
            and self._in_body
            and self._discard_left is None
            and not self.transport.is_closing()
        ):
            if self.expect_100_continue and not self._body_arrived:
                # The client waits for "100 Continue" and got the final answer instead:
                # it will not send the body, so the connection cannot carry on.
                self.transport.close()
            else:
                # Answered before the body ended (e.g. 413): read the rest and drop it,
                # so that a client still writing its body can then read the answer.
                self._start_discarding_body()
        if self._close_after_body:
            self.server_state.total_requests += 1
            return
        super().on_response_complete()

    def close_after_request(self) -> None:
        """Close once the current request body has been read (called by its cycle)."""
        if self.transport.is_closing():
            return
        if not self._in_body or (self.expect_100_continue and not self._body_arrived):
            self.transport.close()  # no body is coming (see on_response_complete)
            return
        self._close_after_body = True
        if self._discard_left is None:
            self._start_discarding_body()

    def shutdown(self) -> None:
        """Graceful shutdown (uvicorn calls this on every connection)."""
        self._draining = True
        if self.transport.is_closing() or self._discard_raw:
            return
        if self._discard_left is not None:
            self._close_after_body = True
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answer it with Connection: close
            return
        if self._in_body or self._head_bytes:
            return  # a request is arriving; its cycle will say Connection: close
        # Idle: the client may be sending its next request right now, and closing would
        # race it. Such a request is answered with Connection: close; a connection that
        # stays quiet is closed after the idle timeout.
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    # -- timeouts --------------------------------------------------------------------

    def _arm(self) -> None:
        """After a read: a head or body still incomplete gets its deadline, counted from
        the end of the read that left it incomplete (a request that arrives in one read,
        the common case, never arms a timer)."""
        if self._deadline is not None:
            return
        if self._in_body:
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(
                    self.limits.body_timeout_s, self._body_timed_out
                )
        elif self._head_bytes and not self.transport.is_closing():
            self._deadline = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._head_bytes and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # a connection that never sent a request
            return
        self._refuse(
            RequestTimeout(
                f"the request line and headers did not arrive within "
                f"{self.limits.header_timeout_s:g} s"
            ),
            level=logging.INFO,
        )

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()  # answered already; the body is cut off
            return
        # The app waits for the body: it now receives http.disconnect, and its answer
        # (if any) is dropped in favour of the 408.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(
            RequestTimeout(
                f"the request body did not arrive within {self.limits.body_timeout_s:g} s"
            ),
            level=logging.INFO,
        )

    # -- refusing and lingering ------------------------------------------------------

    def _refuse(self, error: MlgateError, *, level: int = logging.WARNING) -> None:
        """Answer with the error envelope and close lingering."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # A pipelined request is still being answered: the refusal cannot be
            # written in the middle of that answer.
            self.transport.close()
            return
        request_id = uuid.uuid4().hex
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        log.log(
            level,
            "request refused by the server: %s",
            error.message,
            extra={"status": error.status_code, "error_code": error.code, "client": client},
        )
        body = dumps(error_content(error.code, error.message, error.details, request_id=request_id))
        head = [STATUS_LINE[error.status_code]]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
            *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
        ]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self._linger()

    def _linger(self) -> None:
        """Half-close, then read and drop input until the client closes or a bound."""
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        self._discard_left = self.limits.max_discard_bytes
        self._discard_raw = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(self.limits.body_timeout_s, self.transport.close)

    def _start_discarding_body(self) -> None:
        """Parse the rest of the body without keeping it, up to ``max_discard_bytes``;
        the body deadline still applies."""
        self._discard_left = self.limits.max_discard_bytes
        self._discard_raw = False
        self.flow.resume_reading()

    def _discard(self, data: bytes) -> None:
        assert self._discard_left is not None
        self._discard_left -= len(data)
        if self._discard_left < 0:
            self.transport.close()  # more than we are willing to read: cut it off
            return
        if not self._discard_raw:
            # The parser finds where the body ends (its bytes are ignored: the response
            # is complete); a kept-alive connection then carries on.
            HttpToolsProtocol.data_received(self, data)
            self._arm()


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """What to pass as uvicorn's ``http=``: the guarded protocol bound to ``limits``
    (a partial of a module-level class, so that uvicorn can pickle it for workers)."""
    return cast(type[asyncio.Protocol], functools.partial(GuardedHttpProtocol, limits=limits))
