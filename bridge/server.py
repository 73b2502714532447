"""The HTTP bridge's lifecycle: listen, serve on the running loop, drain, stop.

uvicorn's httptools protocol runs the app (with the limits of protocol.py), but
not uvicorn's `Server`: that one installs its own signal handlers and sleeps in
0.1 s steps while stopping, and here the bridge shares the loop (and the
signals) with the gRPC server. So the listener is made with `loop.create_server`
and the drain waits on the request tasks themselves. Responses carry no Date
header (nothing needs it, and keeping one fresh takes a timer).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Final, Protocol

import uvicorn
from uvicorn.server import ServerState

from bridge.app import BridgeApp, BridgeSettings
from bridge.asgi import Receive, Scope, Send
from bridge.backend import Backend
from bridge.protocol import LimitedProtocol
from sidecar.lifecycle import Lifecycle

log = logging.getLogger("bridge.server")

_BACKLOG: Final = 2048
# After the drain's grace, how long requests get to close their upstreams once cut off.
_CUTOFF_GRACE: Final = 1.0


class DoorApp(Protocol):
    """An HTTP front door's ASGI app: the OpenAI one (BridgeApp) or another protocol's."""

    settings: BridgeSettings
    draining: bool  # set while the server stops: readiness fails

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class BridgeServer(Lifecycle):
    """Serves an HTTP front door (by default `BridgeApp`, the OpenAI-compatible one) over
    HTTP/1.1; `port` is the bound port once started."""

    def __init__(
        self,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 4000,
        settings: BridgeSettings | None = None,
        reuse_port: bool = False,
        app: Callable[[Backend, BridgeSettings | None], DoorApp] = BridgeApp,
        owns_backend: bool = True,
    ) -> None:
        """`reuse_port`: share the port with other processes (SO_REUSEPORT, serve --workers);
        `owns_backend` False: another server started the backend and closes it."""
        self.backend = backend
        self._reuse_port = reuse_port
        self._owns_backend = owns_backend
        self.host = host
        self.port = port
        self.app = app(backend, settings)
        self._server: asyncio.Server | None = None
        self._state = ServerState()
        self._refused: set[LimitedProtocol] = set()  # connections past the limit, closing
        self._stopping: asyncio.Event | None = None  # set once stop() has finished

    async def start(self) -> None:
        if self._server is not None or self._stopping is not None:
            raise RuntimeError("a BridgeServer starts once")
        limits = self.app.settings.limits
        config = uvicorn.Config(
            self.app,
            loop="none",
            http="httptools",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        config.load()
        state = self._state
        state.default_headers = config.encoded_headers
        loop = asyncio.get_running_loop()
        refused = self._refused

        def connection() -> LimitedProtocol:
            return LimitedProtocol(config, state, loop, limits, refused)

        if self._owns_backend:
            await self.backend.start()
        try:
            sock = _listen(self.host, self.port, self._reuse_port)
            try:
                self._server = await loop.create_server(connection, sock=sock, backlog=_BACKLOG)
            except BaseException:
                sock.close()
                raise
        except BaseException:
            if self._owns_backend:
                await self.backend.aclose()
            raise
        self.port = sock.getsockname()[1]

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new requests, let those in flight finish for `grace` s, then cut them off.

        A second call while the first is draining cuts off after its own, shorter grace.
        """
        if self._stopping is not None:
            await self._cut_off_after(grace)
            await self._stopping.wait()
            return
        server = self._server
        if server is None:
            return
        self._stopping = asyncio.Event()
        self.app.draining = True
        server.close()
        state = self._state
        # Idle keep-alive connections close now, busy ones as soon as their response ends.
        for connection in list(state.connections):
            connection.shutdown()
        for refused in list(self._refused):
            refused.transport.close()
        await self._cut_off_after(grace)
        await server.wait_closed()
        if self._owns_backend:
            await self.backend.aclose()
        self._server = None
        self._stopping.set()

    async def _cut_off_after(self, grace: float) -> None:
        """Wait up to `grace` s for the requests in flight, then close their connections."""
        pending = set(self._state.tasks)
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        pending = {task for task in pending if not task.done()}
        if not pending:
            return
        log.warning("cutting off %d request(s) still running", len(pending))
        # To a request, a closed connection is a caller who left: it closes its upstream.
        for connection in list(self._state.connections):
            connection.transport.abort()
        _, pending = await asyncio.wait(pending, timeout=_CUTOFF_GRACE)
        for task in pending:
            task.cancel("the HTTP bridge stopped")
        if pending:
            await asyncio.wait(pending, timeout=_CUTOFF_GRACE)


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it a response's header and body writes wait on delayed ACKs (40 ms each).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen for HTTP on {host}:{port}: {exc.strerror}"
        ) from exc
    return sock
