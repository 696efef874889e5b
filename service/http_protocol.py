"""uvicorn's httptools protocol with the bounds it lacks.

httptools parses a request head of any size, and uvicorn gives a client all
the time it wants to send a head or a body (its only timeout is for idle
keep-alive connections) and to read an answer. So one connection could grow a
worker without limit, and slow or silent ones could hold it forever. This
protocol adds, per connection, from the settings (docs/security.md, "Limits"):

- HTTP_MAX_HEAD_BYTES: a longer request head is answered 431, and the
  connection closed, without buffering more of it; a head that begins after
  another request in the same chunk (pipelining) is measured as the parser
  reads it, and answered 431 in its turn;
- HTTP_HEAD_TIMEOUT: from the connection's start, or from the first chunk of
  a later request, to the end of the head; then 408 and close;
- HTTP_BODY_TIMEOUT: from the end of the head to the end of the body; then
  408 and close (or, once an answer has begun, just close). The app answers
  that 408 itself, woken where it waits for the body (BODY_TIMED_OUT), so it
  carries the request's id and is logged; it has APP_ANSWER_SECONDS to;
- HTTP_SEND_TIMEOUT: how long an answer may stay unread with the send buffer
  full; then the connection is dropped;
- a connection closed after an answer given before its request's body had
  all arrived (413 for a body over MAX_BODY_BYTES, 408, this protocol's own
  refusals while a body is read) is half-closed, and
  what the client still sends is read and dropped for at most LINGER_SECONDS
  (LINGER_BYTES) before it closes: closed with data unread, the kernel
  resets the connection, and the reset may reach the client before it has
  read the answer;
- HTTP_MAX_CONNECTIONS: near it, idle connections are closed (the most
  crowded address's first); requests on connections beyond it, in this
  worker process, are answered 503 and the connection closed;
- HTTP_MAX_CONNECTIONS_PER_ADDRESS: a connection beyond it from one client
  address (the TCP peer's) is answered 429 at once and closed.

Refusals are logged through service/connection_shares.py: the first of a
kind at once, then a count per interval, never one line per socket.

`python -m service` uses it; with `uvicorn --factory service.app:create_app`
pass `--http service.http_protocol:LimitedHttpToolsProtocol`. It keeps
httptools' speed: a byte count per chunk and per header, and timers only while
a head or a body is incomplete (docs/benchmarks.md, "Cost of the bounded HTTP protocol").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.api.errors import JSONAPI_MEDIA_TYPE, error_object
from service.api.jsonapi import encode
from service.api.rate_limits import retry_after
from service.connection_shares import crowd_of
from settings import Settings

PROTOCOL = "service.http_protocol:LimitedHttpToolsProtocol"
# Set in a request's scope when its body stopped arriving (its value says
# what to answer); seconds the app then has to answer 408 before the protocol does.
BODY_TIMED_OUT = "service.body_timed_out"
APP_ANSWER_SECONDS = 1.0
# How long, and how much, a connection answered before its request's body
# had all arrived goes on reading and dropping it before it closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024
# Methods whose requests have no body, in practice: their requests' cycles
# see the transport itself (the others', a `_ClosesAfterTheBody`).
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})
TOO_MANY_CONNECTIONS_RETRY_AFTER = 1.0


@dataclass(frozen=True)
class HttpLimits:
    max_head_bytes: int
    head_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int
    max_connections_per_address: int

    @classmethod
    def of(cls, app_state: dict[str, Any]) -> HttpLimits:
        """The limits of the app's settings (in its lifespan state), or the defaults."""
        settings = app_state.get("settings")
        values = settings if isinstance(settings, Settings) else None

        def setting(name: str) -> Any:
            return getattr(values, name) if values else Settings.model_fields[name].default

        return cls(
            setting("http_max_head_bytes"),
            setting("http_head_timeout"),
            setting("http_body_timeout"),
            setting("http_send_timeout"),
            setting("http_max_connections"),
            setting("http_max_connections_per_address"),
        )


def refusal(status: int, detail: str, extra_headers: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer with a JSON:API error, closing the connection."""
    body = encode({"errors": [error_object(status, detail)]})
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
        + f"content-type: {JSONAPI_MEDIA_TYPE}\r\n".encode()
        + f"content-length: {len(body)}\r\n".encode()
        + b"x-content-type-options: nosniff\r\ncache-control: no-store\r\n"
        + extra_headers
        + b"connection: close\r\n\r\n"
        + body
    )


def _refusing_app(status: int, detail: str) -> Any:
    """An app answering every request with this error and closing the
    connection: for a request that must wait its turn behind those before it
    on the connection (pipelining) before it is refused."""
    body = encode({"errors": [error_object(status, detail)]})
    headers = [
        (b"content-type", JSONAPI_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """The app for requests on a connection over HTTP_MAX_CONNECTIONS."""
    detail = "the server has too many open connections; retry shortly"
    body = encode({"errors": [error_object(503, detail)]})
    headers = [
        (b"content-type", JSONAPI_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", retry_after(TOO_MANY_CONNECTIONS_RETRY_AFTER).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _CountedRefusals(logging.Filter):
    """uvicorn's parser warns of each request it cannot parse ("Invalid HTTP
    request received."), then asks for the 400 (`send_400_response`), which
    the flood log counts (one line per address and 10 s). The warning would
    let any client write a line per request: dropped where this protocol
    counts the refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _DROPPED


# uvicorn's lines a client could make it write once per request: a request it
# cannot parse (counted instead, above), and a request to upgrade the
# connection, which this protocol serves as the plain request it also is.
_DROPPED = frozenset(
    {
        "Invalid HTTP request received.",
        "Unsupported upgrade request.",
        "No supported WebSocket library detected. Please use \"pip install 'uvicorn[standard]'\", "
        "or install 'websockets' or 'wsproto' manually.",
    }
)


_COUNTED_REFUSALS = _CountedRefusals()


class _ClosesAfterTheBody:
    """The transport as the cycle of a request with a body sees it: its close,
    while the request's body is still arriving, lingers (the protocol's
    `close_after_the_body`) instead of closing at once. Writes go to the
    transport itself."""

    __slots__ = ("_protocol", "is_closing", "write")

    def __init__(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self.write = protocol.transport.write
        self.is_closing = protocol.transport.is_closing

    def close(self) -> None:
        self._protocol.close_after_the_body()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol.transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head size, head, body and send time, and connection limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # No WebSocket: the service has no such route, and a connection handed
        # to uvicorn's WebSocket protocol left this one without its close
        # (connection_lost), so its address's count of connections never went
        # down. A request to upgrade is served as the HTTP request it also is.
        self.ws_protocol_class = None
        self._upgrade_asked = False
        if _COUNTED_REFUSALS not in self.logger.filters:
            self.logger.addFilter(_COUNTED_REFUSALS)
        self.limits = HttpLimits.of(app_state)
        self._reading_head = True
        self._head_bytes = 0
        self._heads_completed = 0
        # What the parser has handed over of the current head (its target and
        # headers, with their separators): it also sees the heads that begin
        # inside a chunk, after another request, where `_head_bytes` cannot.
        self._parsed_head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None
        self.crowd = crowd_of(server_state, self.loop)
        self.address = ""
        self.idle_since = self.loop.time()
        # Every request of the connection not yet answered in full: uvicorn
        # keeps only the newest (`self.cycle`), and on a lost connection tells
        # only that one, so a request answered while later ones were pipelined
        # behind it (an event stream above all) never learned its client had
        # gone: its writes failed with tracebacks, and a stream kept its slot.
        self._unanswered: list[Any] = []
        self._lingered: int | None = None  # bytes dropped while lingering

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else ""
        held = self.crowd.arrived(self.address)
        per_address = self.limits.max_connections_per_address
        # A Unix socket has no peer address: only its own proxy connects to it.
        if per_address and self.address and held > per_address:
            self._refuse_connection(per_address)
            return
        closed = self.crowd.make_room(self.connections, self, self.limits.max_connections)
        if len(self.connections) - closed > self.limits.max_connections:
            self.crowd.log.note(
                f"answering 503 on connections over HTTP_MAX_CONNECTIONS "
                f"({self.limits.max_connections})",
                self.address,
            )
            self.app = _too_many_connections
        self._start_deadline(self.limits.head_timeout, self._head_too_slow)

    def _refuse_connection(self, per_address: int) -> None:
        self.crowd.log.note(
            f"refused connections over HTTP_MAX_CONNECTIONS_PER_ADDRESS ({per_address})",
            self.address,
        )
        detail = f"this client address already has {per_address} connections open; retry shortly"
        retry = retry_after(TOO_MANY_CONNECTIONS_RETRY_AFTER)
        self.transport.write(refusal(429, detail, f"retry-after: {retry}\r\n".encode()))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_send_deadline()
        self.crowd.left(self.address)
        for cycle in self._unanswered:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self._unanswered.clear()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """Nothing of a request received and nothing being answered."""
        return (
            self._reading_head
            and not self._head_bytes
            and not self.pipeline
            and (self.cycle is None or self.cycle.response_complete)
            and not self.transport.is_closing()
        )

    def close_idle(self) -> None:
        self.transport.close()

    def on_response_complete(self) -> None:
        self.idle_since = self.loop.time()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        if self._lingered is not None:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        if self._upgrade_asked:
            return  # nothing after a request to upgrade is read (below)
        if self._reading_head:
            self._receive_head(data)
        else:
            super().data_received(data)
        if self.parser.should_upgrade():
            self._after_upgrade_asked()
            return
        self._arm_deadline()

    def close_after_the_body(self) -> None:
        """Close the connection once its answer is sent. If the request's body
        is still arriving, linger: send the answer and end the writing side
        (the client reads the answer, then the end), and read and drop what
        the client still sends until it ends its side, LINGER_SECONDS pass or
        LINGER_BYTES arrive; then close. Closed with unread data, the kernel
        would reset the connection, and a client still sending (a body over
        MAX_BODY_BYTES, answered 413 before it is read) could get the reset
        before the answer."""
        transport = self.transport
        if self._reading_head or self._lingered is not None or transport.is_closing():
            transport.close()
            return
        try:
            transport.write_eof()
        except (NotImplementedError, RuntimeError, OSError):
            transport.close()
            return
        self._lingered = 0
        self.pipeline.clear()  # the connection ends: nothing after is served
        self._start_deadline(LINGER_SECONDS, transport.close)
        self.flow.resume_reading()

    def _after_upgrade_asked(self) -> None:
        """The parser stops at a request to upgrade (`Upgrade` with `Connection:
        upgrade`): it reads no body of that request, and would read the bytes
        after it as a new request. A proxy that forwarded the body would see one
        request where the service served two. So that request is served without
        its body, and is the connection's last: nothing after it is read, and the
        connection closes once it is answered."""
        self._upgrade_asked = True
        self._cancel_deadline()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def _receive_head(self, data: bytes) -> None:
        allowance = self.limits.max_head_bytes - max(self._head_bytes, self._parsed_head_bytes)
        if len(data) <= allowance:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        heads = self._heads_completed
        self._head_bytes += allowance
        super().data_received(data[:allowance])
        if self._heads_completed == heads:
            self._refuse(431, f"the request head is larger than {self.limits.max_head_bytes} bytes")
        elif not self.transport.is_closing():
            super().data_received(data[allowance:])

    def _arm_deadline(self) -> None:
        """After each chunk received: a deadline while a head or a body is
        incomplete, none otherwise. A request whose head and body come in one
        chunk (most of them) so costs no timer; between requests uvicorn's
        keep-alive timeout applies."""
        if self._deadline is not None or self.transport.is_closing():
            return
        if not self._reading_head:
            self._start_deadline(self.limits.body_timeout, self._body_too_slow)
        elif self._head_bytes:
            self._start_deadline(self.limits.head_timeout, self._head_too_slow)

    # The parser's count is a lower bound of the bytes on the wire, so a head
    # within the limit is never refused: a request line has at least 15 bytes
    # besides its target ("GET " and " HTTP/1.1" and its line end), a header
    # at least 3 besides its name and value (":" and its line end).
    def on_message_begin(self) -> None:
        self._parsed_head_bytes = 15
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._parsed_head_bytes += len(url)
        if self._parsed_head_bytes <= self.limits.max_head_bytes:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_head_bytes += len(name) + len(value) + 3
        if self._parsed_head_bytes <= self.limits.max_head_bytes:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._heads_completed += 1
        self._reading_head = False
        self._cancel_deadline()
        self._unanswered = [cycle for cycle in self._unanswered if not cycle.response_complete]
        if self._parsed_head_bytes <= self.limits.max_head_bytes:
            super().on_headers_complete()
            self._track(self.cycle)
            cycle = self.cycle
            if cycle is not None and cycle.scope["method"] not in _BODILESS:
                cycle.transport = cast(asyncio.Transport, _ClosesAfterTheBody(self))
            return
        # Parsed but not kept (its target and headers cut short): answered 431
        # in its turn, after the requests before it, then the connection closes.
        self.crowd.log.note(
            "refused a pipelined request whose head is over HTTP_MAX_HEAD_BYTES", self.address
        )
        self.url = b"/"
        serving, self.app = (
            self.app,
            _refusing_app(
                431, f"the request head is larger than {self.limits.max_head_bytes} bytes"
            ),
        )
        try:
            super().on_headers_complete()
            self._track(self.cycle)
        finally:
            self.app = serving

    def _track(self, cycle: Any) -> None:
        """Keep `cycle` (the request just parsed; None or the same one when
        uvicorn made none, as for an upgrade) among those not yet answered."""
        if cycle is not None and (not self._unanswered or self._unanswered[-1] is not cycle):
            self._unanswered.append(cycle)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self._reading_head, self._head_bytes, self._parsed_head_bytes = True, 0, 0
        super().on_message_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(
                self.limits.send_timeout, self._answer_unread
            )

    def resume_writing(self) -> None:
        self._cancel_send_deadline()
        super().resume_writing()

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._refuse(
            408, f"the request head did not arrive within {self.limits.head_timeout:g} seconds"
        )

    def _body_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()
            return
        detail = f"the request body did not arrive within {self.limits.body_timeout:g} seconds"
        scope = None if cycle is None or cycle.disconnected else cast(dict[str, Any], cycle.scope)
        if scope is not None and BODY_TIMED_OUT not in scope:
            # The app, waiting for the body (service/api/negotiation.py), is
            # woken to answer 408 itself: with the request's id, in the request
            # log and metrics as 408. Should it not answer soon, this answers.
            scope[BODY_TIMED_OUT] = detail
            cycle.message_event.set()
            self._start_deadline(APP_ANSWER_SECONDS, self._body_too_slow)
            return
        self._refuse(408, detail)

    def _answer_unread(self) -> None:
        self._send_deadline = None
        self.crowd.log.note(
            f"dropped a connection whose client read nothing for {self.limits.send_timeout:g}s",
            self.address,
        )
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refused (a NUL in a header,
        a bad Content-Length, both Content-Length and Transfer-Encoding, a
        space in the target...), as a JSON:API error like every other."""
        if msg.startswith("Invalid HTTP request"):
            detail = "the request is not valid HTTP/1.1 (its request line, a header or its framing)"
        else:
            detail = f"the request was refused: {msg.rstrip('.')}"
        self._refuse(400, detail)

    def _refuse(self, status: int, detail: str) -> None:
        if self.transport.is_closing():
            return
        self.crowd.log.note(f"refused a request: {status} {detail}", self.address)
        self.transport.write(refusal(status, detail))
        self.close_after_the_body()

    def _start_deadline(self, seconds: float, callback: Any) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None
