"""The sidecar process lifecycle: start the front doors, run, drain, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import TracebackType

import grpc
from grpc_health.v1 import health

from sidecar.engine import Engine
from sidecar.grpc_server import add_services

log = logging.getLogger("sidecar.server")


class SidecarServer:
    """Owns the gRPC server and the engine; `grpc_port` is the bound port once started."""

    def __init__(self, engine: Engine, *, host: str = "127.0.0.1", grpc_port: int = 50051) -> None:
        self.engine = engine
        self.host = host
        self.grpc_port = grpc_port
        self._grpc: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None

    async def start(self) -> None:
        # Without this, grpc's default SO_REUSEPORT lets a second sidecar bind the same
        # port silently and steal half the connections.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._health = await add_services(server, self.engine)
        bound = server.add_insecure_port(_address(self.host, self.grpc_port))
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {self.host}:{self.grpc_port}")
        self.grpc_port = bound
        await server.start()
        self._grpc = server

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish for `grace` seconds, then close."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        await self.engine.aclose()

    async def __aenter__(self) -> SidecarServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=1.0)

    async def run_until_signalled(self, grace: float = 10.0) -> None:
        """Serve until SIGINT/SIGTERM; the first drains, a second one stops at once."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            log.info("draining for up to %.0fs (signal again to stop now)", grace)
            stop.clear()
            drain = asyncio.create_task(self.stop(grace))
            forced = asyncio.create_task(stop.wait())
            await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                await self.stop(0)
                drain.cancel()
            forced.cancel()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
