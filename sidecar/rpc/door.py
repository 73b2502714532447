"""The gRPC front door as the runtime sees it: start, a bound port, drain and stop."""

from __future__ import annotations

import grpc

from sidecar.engine import Engine
from sidecar.hostport import host_port
from sidecar.rpc.auth import interceptors
from sidecar.rpc.codec import MAX_MESSAGE_BYTES
from sidecar.rpc.health import HealthPublisher
from sidecar.rpc.limits import server_options
from sidecar.rpc.servicer import add_services
from sidecar.rpc.tls import ServerTls, add_port


class GrpcDoor:
    """Serves the Router, health and reflection services; `port` is the bound one once started.

    With a master key in the configuration every call but health needs it; with `tls`
    the port speaks TLS (mutual TLS when it names a client CA)."""

    def __init__(
        self,
        engine: Engine,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        tls: ServerTls | None = None,
        reuse_port: bool = False,
    ) -> None:
        """`reuse_port` shares the port with other processes that ask for it too
        (SO_REUSEPORT: `serve --workers`), the kernel spreading connections among them."""
        self._engine = engine
        self._reuse_port = reuse_port
        self.host = host
        self.port = port
        self.tls = tls
        self._server: grpc.aio.Server | None = None
        self._health: HealthPublisher | None = None

    async def start(self) -> None:
        # Without so_reuseport=0, grpc lets a second sidecar bind the same port silently
        # and steal half the connections.
        config = self._engine.config
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", int(self._reuse_port)),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Security: connection limits, the master key, TLS (limits.py, auth.py, tls.py).
                *server_options(config.limits),
            ],
            interceptors=interceptors(config.general_settings.master_key),
            maximum_concurrent_rpcs=config.limits.grpc_max_concurrent_rpcs,
        )
        self._health = await add_services(server, self._engine)
        bound = add_port(server, host_port(self.host, self.port), self.tls)
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
