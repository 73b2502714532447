"""The sidecar process: one engine behind a list of front doors, started and drained together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from sidecar.engine import Engine
from sidecar.lifecycle import Lifecycle
from sidecar.runtime.signals import run_until_signalled


class FrontDoor(Protocol):
    """A listener that hands calls to the engine (the gRPC door, the HTTP bridge)."""

    @property
    def port(self) -> int:
        """The bound port once started."""
        ...

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish for `grace` seconds, then close.

        A second, shorter stop() while the first drains cuts the calls off sooner."""
        ...


class Runtime(Lifecycle):
    """Starts the engine and its front doors; stops the doors together, then the engine."""

    def __init__(self, engine: Engine, doors: Sequence[FrontDoor]) -> None:
        self.engine = engine
        self.doors = tuple(doors)
        self._started: list[FrontDoor] = []
        self._engine_open = True

    async def start(self) -> None:
        await self.engine.start()
        try:
            for door in self.doors:
                await door.start()
                self._started.append(door)
        except BaseException:
            await self.stop(grace=0)
            raise

    async def stop(self, grace: float = 5.0) -> None:
        """Drain every door at once for up to `grace` seconds; the engine closes once
        none has calls left. New calls are refused from the start (UNAVAILABLE, 503)."""
        self.engine.refuse_new_calls()
        await asyncio.gather(*(door.stop(grace) for door in self._started))
        if self._engine_open:
            self._engine_open = False
            await self.engine.aclose()

    async def run_until_signalled(
        self, grace: float = 10.0, on_hangup: Callable[[], None] | None = None
    ) -> None:
        """Serve until SIGINT/SIGTERM; the first drains, a second one stops at once.
        SIGHUP calls `on_hangup` (a reload)."""
        await run_until_signalled(self.stop, grace, on_hangup)
