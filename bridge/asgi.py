"""The few ASGI pieces the app needs: types, reading a bounded body, a disconnect watch.

Only what the HTTP front door uses, written against the ASGI 3 spec rather than
a framework, so that a relayed token costs one `send` and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from bridge.errors import HttpError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON: Final = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to exceed `limit`."""
    if declared is not None and declared > limit:
        raise too_large(f"{declared:,} bytes (Content-Length)", limit)
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise too_large(f"{len(body):,} bytes", limit)
        return body
    parts = [body]
    size = len(body)
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise too_large(f"more than {limit:,} bytes", limit)
        parts.append(part)
        more = message.get("more_body", False)
    return b"".join(parts)


def too_large(size: str, limit: int) -> HttpError:
    return HttpError(
        413,
        f"the request body is {size}; this server accepts at most {limit:,} bytes",
        code="request_too_large",
        # The rest of the body is never read, so the connection cannot be reused.
        headers=[(b"connection", b"close")],
    )


class DisconnectWatch:
    """Cancels the request's task if the client leaves before the response is complete.

    Starlette's way: a second task waits on `receive()` for `http.disconnect` while
    the request's own task relays. The relay catches its CancelledError and calls
    `absorb()`, which says whether the cancellation was this watch's alone (and not
    also a server shutdown's), so that the upstream is closed and nothing is logged.
    """

    __slots__ = ("_closed", "_task", "_watcher", "disconnected")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("DisconnectWatch must be created inside a task")
        self._task = task
        self._closed = False
        self.disconnected = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._closed:
            self.disconnected = True
            self._task.cancel()

    def close(self) -> None:
        """Stop watching; call before sending the last part of the response."""
        self._closed = True
        if not self._watcher.done():
            self._watcher.cancel()

    async def aclose(self) -> None:
        """Stop watching and wait until the watcher has ended."""
        self.close()
        # asyncio.wait, not await: a cancelled watcher is its normal end, not an error.
        await asyncio.wait({self._watcher})

    def absorb(self) -> bool:
        """True when the pending cancellation came from the client leaving and nothing else."""
        return self.disconnected and self._task.uncancel() == 0
