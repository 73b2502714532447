"""A hostile upstream over a raw socket: it answers whatever bytes a test's mode says.

Unlike the simulators (well-behaved servers of each protocol), it breaks HTTP
itself and echoes what it was sent, credentials included, the way real
misconfigured or malicious services do. The mode is the first path segment of
the request (`api_base = .../<mode>`), so one server serves every case:

    ssh           a non-HTTP service on the port: an SSH banner, then close
    bad-status    a status line that does not parse
    no-colon      a header line without a colon
    long-header   a header over aiohttp's 8 KB limit
    echo-401      a 401 whose error message quotes the request head, keys and all
    echo-frame    a 200 SSE stream whose first event is garbage quoting the key
    echo-error    a 200 SSE stream with an error event quoting the key
    echo-ndjson   a 200 NDJSON stream whose error line quotes the head (Ollama)
    endless       a 200 SSE stream of tokens that never ends
    ok            a short, correct SSE answer
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

import orjson

_TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'


class HostileUpstream:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests: list[str] = []  # "<method> <path>" of each request read
        self.port = 0

    @property
    def busy(self) -> bool:
        """Whether a connection is still being answered (an endless one, say)."""
        return bool(self._handlers)

    def url(self, mode: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}/{mode}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(30):
                await self._answer(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        self.requests.append(f"{method} {path}")
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        length = int(headers.get("Content-Length", "0"))
        if length:
            await reader.readexactly(length)
        mode = path.strip("/").split("/", 1)[0]
        authorization = headers.get("Authorization", "(none)")
        writer.write(_reply(mode, head, authorization))
        await writer.drain()
        if mode == "endless":
            while True:
                writer.write(_TOKEN * 64)
                await writer.drain()


def _reply(mode: str, head: str, authorization: str) -> bytes:
    if mode == "ssh":
        return b"SSH-2.0-OpenSSH_9.6 " + authorization.encode() + b"\r\n"
    if mode == "bad-status":
        return b"HTTP/1.1 2x0 " + authorization.encode() + b"\r\n\r\n"
    if mode == "no-colon":
        return b"HTTP/1.1 200 OK\r\n" + authorization.encode().replace(b" ", b"") + b"\r\n\r\n"
    if mode == "long-header":
        return b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    if mode == "echo-401":
        body = orjson.dumps({"error": {"message": f"Incorrect API key provided: {head}"}})
        return _response(401, "application/json", body)
    if mode == "echo-frame":
        return _response(200, "text/event-stream", f"data: {{{authorization}\n\n".encode(), None)
    if mode == "echo-error":
        event = orjson.dumps({"error": {"message": f"key {authorization} revoked"}})
        return _response(200, "text/event-stream", b"data: " + event + b"\n\n", None)
    if mode == "echo-ndjson":
        line = orjson.dumps({"error": f"refused {head}"}) + b"\n"
        return _response(200, "application/x-ndjson", line, None)
    if mode == "endless":
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    return _response(200, "text/event-stream", _TOKEN + finish + b"data: [DONE]\n\n")


def _response(status: int, kind: str, body: bytes, length: int | None = -1) -> bytes:
    """A response with Content-Length, or (length None) one that ends at the close."""
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nConnection: close\r\n"
    if length is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body
