"""The gRPC front door as the runtime sees it: start, a bound port, drain and stop."""

from __future__ import annotations

import grpc

from sidecar.engine import Engine
from sidecar.hostport import host_port
from sidecar.rpc.codec import MAX_MESSAGE_BYTES
from sidecar.rpc.health import HealthPublisher
from sidecar.rpc.servicer import add_services


class GrpcDoor:
    """Serves the Router, health and reflection services; `port` is the bound one once started."""

    def __init__(self, engine: Engine, *, host: str = "127.0.0.1", port: int = 50051) -> None:
        self._engine = engine
        self.host = host
        self.port = port
        self._server: grpc.aio.Server | None = None
        self._health: HealthPublisher | None = None

    async def start(self) -> None:
        # Without so_reuseport=0, grpc lets a second sidecar bind the same port silently
        # and steal half the connections.
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        self._health = await add_services(server, self._engine)
        bound = server.add_insecure_port(host_port(self.host, self.port))
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {host_port(self.host, self.port)}")
        self.port = bound
        await server.start()
        self._server = server

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let calls in flight finish for `grace` seconds, then close.

        A second, shorter stop() while the first drains cuts the calls off sooner."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
