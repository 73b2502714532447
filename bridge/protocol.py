"""uvicorn's httptools protocol with the limits it lacks, enforced before authentication.

uvicorn bounds neither the time a client may take to send its request nor the
size of its head: an idle or slowloris connection stays open for ever, a
declared Content-Length larger than the body waits for ever, and httptools
joins a long header value piece by piece (quadratic: one 128 MB header took
26 s of CPU). This subclass adds, per connection:

    connections   past `http_max_connections` a new connection gets 503 and is closed
    head          request line and headers within `http_header_timeout` s (from
                  connecting, or from a kept-alive request's first byte), at most
                  `http_max_header_bytes` bytes and `http_max_headers` headers
    body          the whole body within `http_body_timeout` s of its headers
    keep-alive    an idle connection closes after `http_keep_alive` s (uvicorn's own)

Every refusal is an OpenAI-shaped JSON error with `connection: close`, as the
app's own errors are, including uvicorn's "invalid HTTP request" 400. The head
is fed to the parser no further than its limit, so an oversized one costs no
more than the limit to refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from bridge.errors import HttpError
from sidecar.config.model import Limits

# How long a connection answered with a refusal is kept so the client can read it.
_LINGER: Final = 1.0


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


class LimitedProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        refused: set[LimitedProtocol],
    ) -> None:
        super().__init__(config=config, server_state=server_state, app_state={}, _loop=loop)
        self.timeout_keep_alive = limits.http_keep_alive  # uvicorn's idle timer, in seconds
        self._limits = limits
        self._refused = refused  # connections answered 503, lingering; shared
        self._discarding = False  # answered and closing: what the client sends is dropped
        self._head_open = True  # a request head is being read (or awaited, when new)
        self._head_bytes = 0
        self._head_problem: HttpError | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- connections ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.http_max_connections:
            self._refuse_connection(transport)
            return
        super().connection_made(transport)
        self._arm(self._limits.http_header_timeout, self._head_timed_out)

    def _refuse_connection(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        limit = self._limits.http_max_connections
        err = HttpError(
            503,
            f"the server has {limit:,} connections open, its limit; retry shortly",
            type_="server_error",
            code="too_many_connections",
            headers=[(b"retry-after", b"1")],
        )
        transport.write(raw_error(err))
        # Lingering is bounded too: past a few, refused connections close at once.
        if len(self._refused) >= max(64, limit // 8):
            transport.close()
            return
        self._refused.add(self)
        self._close_softly()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._refused.discard(self)
        super().connection_lost(exc)

    # -- the request head ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return  # read and dropped until the client or the linger timer closes
        if self._head_open:
            room = self._limits.http_max_header_bytes - self._head_bytes
            if len(data) > room:
                # Feed only what the head may still use: if it does not end there, it
                # is too large, and the rest is never parsed.
                head, data = data[: max(room, 0)], data[max(room, 0) :]
                if head:
                    super().data_received(head)
                if self.transport.is_closing():
                    return
                if self._head_open:
                    self._send_error(_head_too_large(self._limits))
                    return
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0
        if self._timer is None:  # a kept-alive connection's next request
            self._arm(self._limits.http_header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm()
        if len(self.headers) > self._limits.http_max_headers:
            self._head_problem = HttpError(
                431,
                f"the request has {len(self.headers):,} headers; this server accepts at "
                f"most {self._limits.http_max_headers:,}",
                code="request_header_fields_too_large",
            )
            raise _HeadTooLarge
        super().on_headers_complete()
        self._arm(self._limits.http_body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser refused, in OpenAI's shape."""
        problem, self._head_problem = self._head_problem, None
        self._send_error(
            problem or HttpError(400, "the request is not valid HTTP/1.1", code="invalid_http")
        )

    # -- timers ------------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._timer = None
        seconds = self._limits.http_header_timeout
        self._send_error(
            HttpError(
                408,
                f"the request line and headers did not arrive within {seconds:g}s",
                code="request_timeout",
            )
        )

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.pipeline:
            # A pipelined request waits, unread, for the one before it to be answered.
            self._arm(self._limits.http_body_timeout, self._body_timed_out)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()
            return
        # The app is waiting in receive(): it sees a disconnect and answers nothing itself.
        cycle.disconnected = True
        cycle.message_event.set()
        seconds = self._limits.http_body_timeout
        self._send_error(
            HttpError(
                408, f"the request body did not arrive within {seconds:g}s", code="request_timeout"
            )
        )

    def _arm(self, seconds: float, callback: Callable[[], Any]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send_error(self, err: HttpError) -> None:
        if not self.transport.is_closing():
            self.transport.write(raw_error(err))
            self._close_softly()

    def _close_softly(self) -> None:
        """Close once the answer is out: half-close, drop what the client still sends,
        and close when it does or after a moment. Closing at once with its request
        unread would reset the connection, and the client would lose the answer."""
        transport = self.transport
        self._discarding = True
        self._disarm()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._timer = self.loop.call_later(_LINGER, transport.close)


def _head_too_large(limits: Limits) -> HttpError:
    return HttpError(
        431,
        f"the request line and headers are over {limits.http_max_header_bytes:,} bytes, "
        "this server's limit",
        code="request_header_fields_too_large",
    )


def raw_error(err: HttpError) -> bytes:
    """A whole HTTP/1.1 response for `err`, for answers written below the app."""
    body = err.body()
    lines = [
        STATUS_LINE[err.status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        *(name + b": " + value + b"\r\n" for name, value in err.headers),
        b"\r\n",
        body,
    ]
    return b"".join(lines)
