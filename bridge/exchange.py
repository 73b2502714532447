"""One call through the bridge, whatever protocol its caller speaks.

Each front door (OpenAI chat, Anthropic Messages, the Responses API) is a
translator: it parses its wire request into one canonical ChatRequest and
renders canonical chunks and answers back in its own shapes. What lies between
is the same for every door and lives here: the request id, the caller's
identity for per-caller caps, the disconnect watch, the route headers, the
mapping of failures to HTTP errors, and the two relays.

A stream's head goes out with its first event, so a call that fails before its
first token still gets a proper HTTP status in the door's error shape; after
that, a failure ends the stream with the door's own error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from bridge import spend
from bridge.asgi import JSON, ClientGone, DisconnectWatch, Receive, Send, read_body
from bridge.backend import AnswerStream, Backend
from bridge.errors import HttpError, http_error
from bridge.parse import parse_body
from sidecar.errors import SidecarError
from sidecar.types import ChatRequest, ChatResponse, Chunk, RouteTaken

log = logging.getLogger("bridge")

P = TypeVar("P")
Header = tuple[bytes, bytes]
# An error as one door writes it: (status, body). The OpenAI shape is the default.
ErrorShape = Callable[[HttpError], tuple[int, bytes]]

SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Reverse proxies such as nginx would otherwise hold tokens back in a buffer.
    (b"x-accel-buffering", b"no"),
)
_REQUEST_ID_MAX: Final = 128


def openai_shape(err: HttpError) -> tuple[int, bytes]:
    return err.status, err.body()


class CallHead(Protocol):
    """The request headers a door reads (bridge/app.py finds them in one pass)."""

    credential: bytes | None
    content_length: int | None
    request_id: bytes | None

    @property
    def passed_on(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Call:
    """A parsed request on its way to the backend, with what the relays need."""

    request: ChatRequest
    timeout: float | None  # seconds the caller gives the whole call, None for no limit
    credential: str | None  # the caller's key, for a backend that checks it again
    headers: tuple[Header, ...]  # sent with every response of the call (the request id)


class StreamEncoder(Protocol):
    """Renders one streamed answer, in order, as the bytes of a door's protocol."""

    def first(self, chunk: Chunk) -> bytes: ...

    def chunk(self, chunk: Chunk) -> bytes: ...

    def end(self) -> bytes: ...

    def failed(self, err: HttpError) -> bytes:
        """The event that ends a stream which failed after it started."""
        ...


@dataclass(frozen=True, slots=True)
class Keepalive:
    """An event sent whenever the stream was silent for `interval` seconds."""

    frame: bytes
    interval: float


async def send_body(send: Send, status: int, body: bytes, headers: list[Header]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send, err: HttpError, shape: ErrorShape = openai_shape, *extra: Header
) -> None:
    status, body = shape(err)
    await send_body(send, status, body, [JSON, *err.headers, *extra])


async def read_request(
    receive: Receive,
    send: Send,
    head: CallHead,
    limit: int,
    parse: Callable[[dict[str, Any]], P],
    shape: ErrorShape = openai_shape,
    headers: tuple[Header, ...] = (),
) -> P | None:
    """The request body read within `limit` bytes and parsed, or None once the client
    left or was told, in the door's shape, what is wrong with it."""
    try:
        raw = await read_body(receive, head.content_length, limit)
        return parse(parse_body(raw))
    except ClientGone:
        return None
    except HttpError as err:
        await send_error(send, err, shape, *headers)
        return None


async def relay_stream(
    backend: Backend,
    receive: Receive,
    send: Send,
    call: Call,
    encoder: StreamEncoder,
    shape: ErrorShape = openai_shape,
    keepalive: Keepalive | None = None,
) -> None:
    """Relay a streamed call as SSE: nothing is sent before its first chunk."""
    request = call.request
    stream: AnswerStream | None = None
    out = _Out(send, locked=keepalive is not None)
    pinger: asyncio.Task[None] | None = None
    async with watched(receive, request.request_id) as watch:
        try:
            stream = backend.stream(request, call.timeout, call.credential)
            first = await stream.__anext__()
            headers = [*SSE_HEADERS, *route_headers(stream.route), *call.headers]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            out.started = True
            await out.body(encoder.first(first))
            if keepalive is not None:
                pinger = asyncio.create_task(out.keep_alive(keepalive))
            async for chunk in stream:
                frames = encoder.chunk(chunk)
                if frames:
                    await out.body(frames)
            watch.close()
            await out.stop(pinger)
            await out.body(encoder.end(), more=False)
        except Exception as exc:
            err = as_http_error(exc, f"request {request.request_id}")
            watch.close()
            await out.stop(pinger)
            if out.started:
                await out.body(encoder.failed(err), more=False)
            else:
                await send_error(send, err, shape, *call.headers)
        finally:
            await out.stop(pinger)
            if stream is not None:
                await stream.aclose()


async def relay_complete(
    backend: Backend,
    receive: Receive,
    send: Send,
    call: Call,
    render: Callable[[ChatResponse], bytes],
    shape: ErrorShape = openai_shape,
) -> None:
    """Relay a call answered whole, as one JSON body."""
    request = call.request
    async with watched(receive, request.request_id) as watch:
        try:
            answer = await backend.complete(request, call.timeout, call.credential)
            body = render(answer)
            watch.close()
            await send_body(send, 200, body, [JSON, *route_headers(answer.route), *call.headers])
        except Exception as exc:
            watch.close()
            err = as_http_error(exc, f"request {request.request_id}")
            await send_error(send, err, shape, *call.headers)


class _Out:
    """A stream's body, sent by the relay and, in its silences, by a keepalive task.
    The lock exists only for a stream with a keepalive, so that two events never
    interleave; other streams send without it."""

    __slots__ = ("_lock", "_send", "quiet", "started")

    def __init__(self, send: Send, locked: bool) -> None:
        self._send = send
        self._lock = asyncio.Lock() if locked else None
        self.quiet = True
        self.started = False

    async def body(self, data: bytes, more: bool = True) -> None:
        message = {"type": "http.response.body", "body": data, "more_body": more}
        if self._lock is None:
            await self._send(message)
        else:
            async with self._lock:
                await self._send(message)
        self.quiet = False

    async def keep_alive(self, keepalive: Keepalive) -> None:
        while True:
            await asyncio.sleep(keepalive.interval)
            if self.quiet:
                await self.body(keepalive.frame)
            self.quiet = True

    async def stop(self, pinger: asyncio.Task[None] | None) -> None:
        if pinger is not None and not pinger.done():
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger


@asynccontextmanager
async def watched(receive: Receive, request_id: str) -> AsyncIterator[DisconnectWatch]:
    """Relay under a disconnect watch: a client that leaves cancels the relay, quietly."""
    watch = DisconnectWatch(receive)
    try:
        yield watch
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        log.info("request %s: the client went away; upstream closed", request_id)
    finally:
        await watch.aclose()


def with_caller(request: ChatRequest, key: bytes | None) -> ChatRequest:
    """The call's caller for per-caller caps: metadata.caller, else its API key (hashed),
    from whichever header carried it."""
    if "caller" in request.metadata or not key:
        return request
    metadata = {**request.metadata, "caller": spend.key_caller(key)}
    return dataclasses.replace(request, metadata=metadata)


def route_headers(route: RouteTaken | None) -> list[Header]:
    if route is None:
        return []
    headers = [
        (b"x-sidecar-deployment", route.deployment.encode()),
        (b"x-sidecar-locality", route.locality.value.encode()),
        (b"x-sidecar-attempts", str(route.attempts).encode()),
    ]
    if route.translated:
        # The request was answered in another kind than asked (a text completion as a chat).
        headers.append((b"x-sidecar-translated", route.translated.encode()))
    return headers


def request_id(given: bytes | None) -> str:
    """The caller's id when it is a sane token, else a fresh one."""
    if given is None:
        return uuid.uuid4().hex
    if not 0 < len(given) <= _REQUEST_ID_MAX or not all(0x21 <= b <= 0x7E for b in given):
        raise HttpError(
            400,
            f"x-request-id: expected 1 to {_REQUEST_ID_MAX} printable ASCII characters "
            "without spaces",
            param="x-request-id",
        )
    return given.decode("ascii")


def as_http_error(exc: Exception, what: str) -> HttpError:
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, SidecarError):
        log.info("%s failed: %s", what, exc.message)
        return http_error(exc)
    # A bug of ours: say so plainly, keep the details in the log.
    log.exception("%s: unexpected error in the bridge", what)
    return HttpError(
        500, f"internal error in the bridge: {type(exc).__name__}", type_="server_error"
    )
