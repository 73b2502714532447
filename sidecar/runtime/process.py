"""The sidecar process lifecycle: start the front doors, run, drain, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import grpc

from bridge.app import BridgeSettings
from bridge.backend import InProcessBackend
from bridge.server import BridgeServer
from sidecar.engine import Engine
from sidecar.rpc.codec import MAX_MESSAGE_BYTES
from sidecar.rpc.health import HealthPublisher
from sidecar.rpc.servicer import add_services

log = logging.getLogger("sidecar.runtime.process")


class SidecarServer:
    """Owns the front doors and the engine; the ports are the bound ones once started.

    gRPC always; the OpenAI-compatible HTTP bridge too when `http_port` is given,
    on the same loop and calling the same engine. Its master key comes from the
    configuration unless `http_settings` say otherwise.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 50051,
        http_port: int | None = None,
        http_settings: BridgeSettings | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self._http_settings = http_settings or BridgeSettings(
            master_key=engine.config.general_settings.master_key
        )
        self._grpc: grpc.aio.Server | None = None
        self._health: HealthPublisher | None = None
        self._bridge: BridgeServer | None = None

    async def start(self) -> None:
        self.engine.start()
        # Without this, grpc's default SO_REUSEPORT lets a second sidecar bind the same
        # port silently and steal half the connections.
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        self._health = await add_services(server, self.engine)
        bound = server.add_insecure_port(_address(self.host, self.grpc_port))
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {self.host}:{self.grpc_port}")
        self.grpc_port = bound
        await server.start()
        self._grpc = server
        if self.http_port is not None:
            bridge = BridgeServer(
                InProcessBackend(self.engine),
                host=self.host,
                port=self.http_port,
                settings=self._http_settings,
            )
            try:
                await bridge.start()
            except BaseException:
                await self.stop(grace=0)
                raise
            self._bridge = bridge
            self.http_port = bridge.port

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish for `grace` seconds, then close."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        # Both front doors drain at once; the engine closes once neither has calls left.
        # A second, shorter stop() while the first drains cuts both off sooner.
        stopping = []
        if self._grpc is not None:
            stopping.append(self._grpc.stop(grace))
        if self._bridge is not None:
            stopping.append(self._bridge.stop(grace))
        await asyncio.gather(*stopping)
        self._grpc = None
        self._bridge = None
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
        await run_until_signalled(self.stop, grace)


async def run_until_signalled(
    stop: Callable[[float], Coroutine[Any, Any, None]], grace: float
) -> None:
    """Wait for SIGINT/SIGTERM, then `stop(grace)`; a second signal calls `stop(0)`."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, signalled.set)
    try:
        await signalled.wait()
        log.info("draining for up to %.0fs (signal again to stop now)", grace)
        signalled.clear()
        drain = asyncio.create_task(stop(grace))
        forced = asyncio.create_task(signalled.wait())
        await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            await stop(0)
            drain.cancel()
        forced.cancel()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
