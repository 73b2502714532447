"""Raw-socket upstreams: HTTP written by hand, so a test can misbehave in ways no
well-behaved server (and none of the project's simulators) would.

Each accepted connection reads one request (head and Content-Length body) and
hands it to the test's script, which writes whatever bytes it likes. The server
binds 127.0.0.1 port 0 and, on exit, cancels every script still running and
closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class Request:
    head: bytes  # request line and headers, lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip() == name.lower().encode():
                return value.strip().decode()
        return None


@dataclass
class Upstream:
    url: str
    connections: int = 0  # accepted so far
    closed_by_client: int = 0  # connections the client closed while a script waited
    requests: list[Request] = field(default_factory=list)


@dataclass
class Conn:
    """One accepted connection, as the script sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    upstream: Upstream

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_closes(self) -> None:
        """Keep the socket open, reading and discarding, until the client closes it."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.upstream.closed_by_client += 1


Script = Callable[[Conn, Request], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def head(content_type: str, *, chunked: bool = True, extra: str = "") -> bytes:
    framing = "Transfer-Encoding: chunked\r\n" if chunked else ""
    return f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{framing}{extra}\r\n".encode()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    request = Request(raw.lower(), b"")
    length = request.header("content-length")
    if length:
        request.body = await reader.readexactly(int(length))
    return request


@asynccontextmanager
async def raw_upstream(script: Script, *, keep_alive: bool = False) -> AsyncIterator[Upstream]:
    """A server running `script` for each request; with `keep_alive`, a connection
    goes on to read the next request once the script returns."""
    tasks: set[asyncio.Task[None]] = set()
    upstream = Upstream("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        upstream.connections += 1
        conn = Conn(reader, writer, upstream)
        try:
            while (request := await _read_request(reader)) is not None:
                upstream.requests.append(request)
                await script(conn, request)
                if not keep_alive:
                    break
        except ConnectionError:
            pass  # the client went away mid-script: what several tests provoke
        except asyncio.CancelledError:
            pass  # the server is shutting down; ending here keeps asyncio from logging it
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()
