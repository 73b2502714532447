"""The one clock: what every time-reading part of the sidecar asks for the time.

The engine owns a `Clock` and hands it to health tracking, the watchdog and each
call, so a test can swap in a fake one and move time forward instead of sleeping.
Times are seconds on a monotonic scale; `call_at` schedules a callback at such a
time. `sleep` and `timeout_at` are asyncio's on any clock; `alarm` is a future due at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        """Run `callback` on the running loop once `now()` reaches `when`."""
        ...


class MonotonicClock:
    """`time.monotonic`, with timers on the running event loop."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        # A delay rather than a loop time: the loop's own clock need not share our origin
        # (uvloop's is cached per iteration, in milliseconds).
        delay = max(0.0, when - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, callback)


def alarm(clock: Clock, when: float) -> asyncio.Future[None]:
    """A future that completes once `now()` reaches `when`; cancelling it disarms the timer."""
    due: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    timer = clock.call_at(when, lambda: _settle(due))
    due.add_done_callback(lambda _: timer.cancel())
    return due


async def sleep(clock: Clock, seconds: float) -> None:
    """`asyncio.sleep` on any clock."""
    await alarm(clock, clock.now() + seconds)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@asynccontextmanager
async def timeout_at(clock: Clock, when: float | None) -> AsyncIterator[None]:
    """Raise TimeoutError in the current task if the block is still running at `when`."""
    if when is None:
        yield
        return
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("timeout_at must be used inside a task")
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = clock.call_at(when, expire)
    try:
        yield
    except asyncio.CancelledError:
        # Ours only when nobody else also asked the task to stop.
        if expired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()
