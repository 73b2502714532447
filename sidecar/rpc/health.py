"""Keeps the standard gRPC health service in step with what the engine knows.

Each model alias is a service name of its own: SERVING while at least one of its
deployments may take traffic. The Router service is SERVING while any alias is.
The overall status ("") stays SERVING while the process runs.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from sidecar.clock import Cancellable
from sidecar.engine import Engine

log = logging.getLogger("sidecar.rpc.health")

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthPublisher:
    def __init__(self, servicer: health.aio.HealthServicer, engine: Engine, service: str) -> None:
        self._servicer = servicer
        self._engine = engine
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._timer: Cancellable | None = None
        self._closed = False
        # Aliases published so far: one a reload removed turns NOT_SERVING.
        self._published: set[str] = set()
        engine.health.on_change(self.changed)

    def changed(self) -> None:
        """Schedule one publication; changes that arrive meanwhile join it."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = self._loop.create_task(self.publish())
        self._task.add_done_callback(_report)

    async def publish(self) -> None:
        tracker = self._engine.health
        any_serving = False
        for name, group in self._engine.config.groups.items():
            serving = tracker.group_serving(group.deployments)
            any_serving = any_serving or serving
            await self._servicer.set(name, _SERVING if serving else _NOT_SERVING)
        groups = self._engine.config.groups
        for removed in self._published.difference(groups):
            await self._servicer.set(removed, _NOT_SERVING)
        self._published = set(groups)
        await self._servicer.set(self._service, _SERVING if any_serving else _NOT_SERVING)
        # A cooldown ends by the clock, not by an event: look again when the next one ends.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wait = tracker.next_recovery()
        if wait is not None and not self._closed:
            clock = self._engine.clock
            self._timer = clock.call_at(clock.now() + wait + 0.01, self.changed)

    async def enter_graceful_shutdown(self) -> None:
        """Stop publishing and report everything NOT_SERVING for good."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            # Waited for, not awaited: a failed publication was logged by _report already.
            await asyncio.wait({self._task})
        await self._servicer.enter_graceful_shutdown()


def _report(task: asyncio.Task[None]) -> None:
    """Log a publication that failed, so that a stale health status has a reason on record."""
    if not task.cancelled() and task.exception() is not None:
        log.error("publishing gRPC health failed", exc_info=task.exception())
