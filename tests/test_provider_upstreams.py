"""Both providers against raw-socket upstreams that misbehave on purpose.

Answers that end while the socket stays open, broken chunked encoding, lines
that never end, compression bombs, hostile Retry-After headers and connects
that hang: each must end promptly with the answer or with the project's own
error, with memory bounded. A guard bounds every call: a provider that waited
for the socket or buffered without limit would trip it (and the old code did).
"""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.model import Deployment, ProviderKind, Timeouts
from sidecar.errors import (
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from sidecar.providers import HttpPool, ProbeStatus, ProviderRegistry
from sidecar.providers.http import DEFAULT_MAX_FRAME, MAX_RETRY_AFTER, parse_retry_after
from sidecar.types import ChatRequest, Chunk, Message, Usage
from tests.harness import chat_request, make_config, running_sidecar, wait_until
from tests.raw_upstream import LAST_CHUNK, Conn, Request, chunk, head, raw_upstream

REQUEST = ChatRequest("m", (Message("user", "hi"),))
# Bounds each call. Far above anything a correct provider needs, far below the
# limits (idle 600 s) a waiting provider would run into.
GUARD = 10.0
PATIENT = Timeouts(connect=5.0, first_token=600.0, idle=600.0, total=600.0)


@dataclass(frozen=True)
class Wire:
    kind: ProviderKind
    content_type: str
    path: str  # appended to the upstream URL to make the api_base
    frames: tuple[bytes, ...]  # a complete answer, "Hello", usage 3 + 2

    def deployment(self, url: str, timeouts: Timeouts = PATIENT) -> Deployment:
        return Deployment("m/0", "m", self.kind, "model", url + self.path, timeouts=timeouts)


def sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


HELLO = sse('{"choices":[{"index":0,"delta":{"content":"Hel"}}]}')
WORLD = sse('{"choices":[{"index":0,"delta":{"content":"lo"}}]}')
FINISH = sse('{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
USAGE = sse('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}')
HEL_LINE = b'{"message":{"role":"assistant","content":"Hel"},"done":false}\n'
LO_LINE = b'{"message":{"role":"assistant","content":"lo"},"done":false}\n'
DONE_LINE = (
    b'{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
    b'"prompt_eval_count":3,"eval_count":2}\n'
)

OLLAMA = Wire(ProviderKind.OLLAMA, "application/x-ndjson", "", (HEL_LINE, LO_LINE, DONE_LINE))
OPENAI = Wire(
    ProviderKind.OPENAI,
    "text/event-stream",
    "/v1",
    (HELLO, WORLD, FINISH, USAGE, b"data: [DONE]\n\n"),
)
# Some OpenAI-compatible servers never send [DONE]: the usage chunk after the finish is last.
OPENAI_NO_DONE = Wire(
    ProviderKind.OPENAI, "text/event-stream", "/v1", (HELLO, WORLD, FINISH, USAGE)
)
# Gemini has no sentinel: the chunk with the finishReason is the last.
_GEMINI_USAGE = '"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}'
GEMINI = Wire(
    ProviderKind.GEMINI,
    "text/event-stream",
    "",
    (
        sse('{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}]}'),
        sse(
            '{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},'
            f'"finishReason":"STOP"}}],{_GEMINI_USAGE}}}'
        ),
    ),
)
BOTH = [pytest.param(OLLAMA, id="ollama"), pytest.param(OPENAI, id="openai")]
ALL = [
    *BOTH,
    pytest.param(OPENAI_NO_DONE, id="openai-without-done"),
    pytest.param(GEMINI, id="gemini"),
]
MODELS = {
    ProviderKind.OLLAMA: "ollama/llama3",
    ProviderKind.OPENAI: "openai/qwen",
    ProviderKind.GEMINI: "gemini/model",
}


@asynccontextmanager
async def registry(pool: HttpPool | None = None) -> AsyncIterator[ProviderRegistry]:
    providers = ProviderRegistry(pool or HttpPool())
    try:
        yield providers
    finally:
        await providers.aclose()


async def call(
    providers: ProviderRegistry, deployment: Deployment, seen: asyncio.Event | None = None
) -> tuple[list[Chunk], UpstreamError | None]:
    """Every chunk the provider yields, and the error it ended with, if any.

    `seen` is set once a chunk with a finish reason (the last) arrives, or with
    the first chunk when the call has no finish: an upstream script can wait for
    it to be sure that what it sends next comes in a read of its own."""
    chunks: list[Chunk] = []
    async with asyncio.timeout(GUARD):
        try:
            async for c in providers.stream(deployment, REQUEST):
                chunks.append(c)
                if seen is not None:
                    seen.set()
        except UpstreamError as exc:
            return chunks, exc
    return chunks, None


def text(chunks: list[Chunk]) -> str:
    return "".join(c.content for c in chunks)


def rss() -> int:
    """This process's resident set size in bytes."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status to read the process's memory")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS line in /proc/self/status")


@contextmanager
def memory_bounded(limit: int) -> Iterator[None]:
    before = rss()
    yield
    grown = rss() - before
    assert grown < limit, f"the process grew by {grown / 2**20:.0f} MiB"


# -- the answer ends at the terminal frame ----------------------------------------------


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
@pytest.mark.parametrize("protocol", ALL)
async def test_a_complete_answer_ends_although_the_socket_stays_open(
    protocol: Wire, chunked: bool
) -> None:
    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type, chunked=chunked))
        for frame in protocol.frames:
            await conn.send(chunk(frame) if chunked else frame)
        await conn.until_client_closes()  # never ends the body, never closes

    async with raw_upstream(script) as upstream, registry() as providers:
        chunks, error = await call(providers, protocol.deployment(upstream.url))
        assert error is None
        assert text(chunks) == "Hello"
        assert (chunks[-1].finish_reason, chunks[-1].usage) == ("stop", Usage(3, 2))
        # The provider itself gave the connection up; nothing waits for the pool to close.
        assert await wait_until(lambda: upstream.closed_by_client == 1, within=GUARD)


@pytest.mark.parametrize("delay", [0.0, 0.05], ids=["at-once", "a-moment-later"])
@pytest.mark.parametrize("protocol", BOTH)
async def test_the_connection_is_reused_when_the_body_ends_after_the_last_frame(
    protocol: Wire, delay: float
) -> None:
    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type))
        for frame in protocol.frames:
            await conn.send(chunk(frame))
        await asyncio.sleep(delay)
        await conn.send(LAST_CHUNK)

    # A linger far longer than the delay, so that the test does not race it.
    async with (
        raw_upstream(script, keep_alive=True) as upstream,
        registry(HttpPool(linger=GUARD / 2)) as providers,
    ):
        for _ in range(3):
            chunks, error = await call(providers, protocol.deployment(upstream.url))
            assert (error, text(chunks)) == (None, "Hello")
        assert upstream.connections == 1
        assert len(upstream.requests) == 3


@pytest.mark.parametrize("protocol", ALL)
async def test_callers_get_the_answer_over_grpc_while_the_upstream_keeps_the_socket(
    protocol: Wire,
) -> None:
    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type))
        for frame in protocol.frames:
            await conn.send(chunk(frame))
        await conn.until_client_closes()

    model = MODELS[protocol.kind]
    async with raw_upstream(script, keep_alive=True) as upstream:
        config = make_config(
            [("m", model, {"api_base": upstream.url + protocol.path})],
            timeouts={"first_token": 300, "idle": 300, "total": 600},
        )
        async with running_sidecar(config) as sidecar:
            streamed = [c async for c in sidecar.stub.StreamChat(chat_request("m"), timeout=GUARD)]
            assert "".join(c.delta for c in streamed) == "Hello"
            assert streamed[-1].finish_reason == "stop"
            whole = await sidecar.stub.Chat(chat_request("m"), timeout=GUARD)
            assert (whole.content, whole.usage.completion_tokens) == ("Hello", 2)


# -- broken framing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [b"zz\r\nxx\r\n", b"-5\r\nabc\r\n", b"ffffffffffffffffffff\r\nabc\r\n", b"5\r\nabcdefgh\r\n"],
    ids=["not-hex", "negative", "overflowing-size", "data-longer-than-its-size"],
)
@pytest.mark.parametrize("protocol", BOTH)
async def test_broken_chunked_encoding_is_malformed_at_once(protocol: Wire, broken: bytes) -> None:
    relayed = asyncio.Event()

    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type) + chunk(protocol.frames[0]))
        # aiohttp drops a whole read that does not parse, so the break comes in its own.
        await relayed.wait()
        await conn.send(broken)
        await conn.until_client_closes()

    async with raw_upstream(script) as upstream, registry() as providers:
        chunks, error = await call(providers, protocol.deployment(upstream.url), relayed)
    assert text(chunks) == "Hel"
    assert isinstance(error, UpstreamMalformed)
    assert "transfer encoding" in error.message


@pytest.mark.parametrize("protocol", BOTH)
async def test_broken_framing_after_the_last_frame_does_not_spoil_the_answer(
    protocol: Wire,
) -> None:
    answered = asyncio.Event()

    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type))
        for frame in protocol.frames:
            await conn.send(chunk(frame))
        await answered.wait()
        await conn.send(b"not a chunk size\r\n")
        await conn.until_client_closes()

    # A linger past the guard: only the break, noticed at once, ends the call in time.
    async with raw_upstream(script) as upstream, registry(HttpPool(linger=2 * GUARD)) as providers:
        chunks, error = await call(providers, protocol.deployment(upstream.url), answered)
    assert (error, text(chunks), chunks[-1].usage) == (None, "Hello", Usage(3, 2))


# -- limits on what an upstream sends ---------------------------------------------------

HUNDRED_MB = 100 * 2**20
PIECE = b"a" * 65536


@pytest.mark.parametrize(
    ("protocol", "opening"),
    [
        pytest.param(OLLAMA, b'{"message":{"content":"', id="ollama-line"),
        pytest.param(OPENAI, b"data: ", id="sse-data-line"),
        pytest.param(OPENAI, b"", id="sse-field-name"),
    ],
)
async def test_a_line_that_never_ends_fails_at_the_frame_limit(
    protocol: Wire, opening: bytes
) -> None:
    sent = [0]

    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type) + chunk(protocol.frames[0]))
        if opening:
            await conn.send(chunk(opening))
        while sent[0] < HUNDRED_MB:
            await conn.send(chunk(PIECE))
            sent[0] += len(PIECE)

    async with raw_upstream(script) as upstream, registry() as providers:
        with memory_bounded(48 * 2**20):
            chunks, error = await call(providers, protocol.deployment(upstream.url))
    assert text(chunks) == "Hel"
    assert isinstance(error, UpstreamMalformed)
    assert f"{DEFAULT_MAX_FRAME:,} bytes" in error.message
    assert sent[0] < HUNDRED_MB / 4  # the provider hung up long before the end


async def test_sse_data_lines_that_never_make_an_event_fail_at_the_frame_limit() -> None:
    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(OPENAI.content_type))
        line = b"data: " + b"b" * 1000 + b"\n"
        for _ in range(HUNDRED_MB // len(line)):
            await conn.send(chunk(line * 64))

    async with raw_upstream(script) as upstream, registry() as providers:
        with memory_bounded(48 * 2**20):
            _, error = await call(providers, OPENAI.deployment(upstream.url))
    assert isinstance(error, UpstreamMalformed)
    assert f"{DEFAULT_MAX_FRAME:,} bytes" in error.message


@pytest.mark.parametrize("protocol", BOTH)
async def test_the_frame_limit_is_a_setting(protocol: Wire) -> None:
    async def script(conn: Conn, request: Request) -> None:
        await conn.send(head(protocol.content_type))
        for frame in protocol.frames:
            await conn.send(chunk(frame))
        await conn.send(LAST_CHUNK)

    async with raw_upstream(script) as upstream, registry(HttpPool(max_frame=16)) as providers:
        chunks, error = await call(providers, protocol.deployment(upstream.url))
    assert isinstance(error, UpstreamMalformed)
    assert "limit of 16 bytes" in error.message
    assert chunks == []


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of a few hundred KB that inflates to `inflated` bytes of zeros."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(2**20)
    parts = [deflate.compress(block) for _ in range(inflated // len(block))]
    return b"".join([*parts, deflate.flush()])


@pytest.mark.parametrize("protocol", BOTH)
async def test_a_compressed_answer_is_refused_unread(protocol: Wire) -> None:
    bomb = gzip_bomb(256 * 2**20)

    async def script(conn: Conn, request: Request) -> None:
        extra = f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n"
        await conn.send(head(protocol.content_type, chunked=False, extra=extra))
        await conn.send(bomb)

    async with raw_upstream(script) as upstream, registry() as providers:
        with memory_bounded(48 * 2**20):
            chunks, error = await call(providers, protocol.deployment(upstream.url))
    assert chunks == []
    assert isinstance(error, UpstreamMalformed)
    assert "compressed" in error.message
    assert upstream.requests[0].header("accept-encoding") == "identity"


async def test_probes_ask_for_identity_and_never_inflate() -> None:
    bomb = gzip_bomb(64 * 2**20)

    async def script(conn: Conn, request: Request) -> None:
        extra = f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n"
        await conn.send(head("application/json", chunked=False, extra=extra) + bomb)

    async with raw_upstream(script) as upstream, registry() as providers:
        with memory_bounded(48 * 2**20):
            result = await providers.probe(OPENAI.deployment(upstream.url))
    assert result is not None
    assert result.status is ProbeStatus.UNKNOWN  # a reply it cannot read, never inflated
    assert upstream.requests[0].header("accept-encoding") == "identity"


# -- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("4", 4.0),
        ("0.6", 0.6),
        (" 12 ", 12.0),
        ("0", 0.0),
        ("999999999", MAX_RETRY_AFTER),
        ("9" * 5000, MAX_RETRY_AFTER),
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("-5", None),
        ("1e9", None),
        ("1_000", None),
        ("soon", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("Mon, 99 Foo 2015 99:99:99 GMT", None),
        ("Thu, 01 Jan 0001 00:00:00 GMT", 0.0),
    ],
)
def test_retry_after_is_parsed_defensively(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


@given(st.text(max_size=60))
def test_retry_after_never_raises_and_stays_within_the_cap(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("header", "expected"),
    [("inf", None), ("nan", None), ("-3", None), ("999999999", MAX_RETRY_AFTER), ("2", 2.0)],
)
@pytest.mark.parametrize("protocol", BOTH)
async def test_a_429_with_a_hostile_retry_after_is_a_rate_limit(
    protocol: Wire, header: str, expected: float | None
) -> None:
    async def script(conn: Conn, request: Request) -> None:
        body = b'{"error":"slow down"}'
        await conn.send(
            f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: {header}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async with raw_upstream(script) as upstream, registry() as providers:
        _, error = await call(providers, protocol.deployment(upstream.url))
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after == expected


# -- connecting -------------------------------------------------------------------------


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose accept queue is full, so new connects hang (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with suppress(BlockingIOError):  # a non-blocking connect is under way
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("protocol", BOTH)
async def test_the_deployment_connect_timeout_is_honoured(
    protocol: Wire, unanswered_port: int
) -> None:
    # Far under the 5 s every pool used to connect with, whatever the deployment said;
    # the guard (a third of that) only passes when this limit is the one applied.
    quick = Timeouts(connect=0.2, first_token=600.0, idle=600.0, total=600.0)
    deployment = protocol.deployment(f"http://127.0.0.1:{unanswered_port}", quick)
    async with registry() as providers:
        async with asyncio.timeout(5.0 / 3):
            _, error = await call(providers, deployment)
        assert isinstance(error, UpstreamTimeout)
        assert "connecting" in error.message
