"""Serving until signalled: the first SIGINT/SIGTERM drains, a second stops at once;
SIGHUP, meanwhile, calls the reload hook."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("sidecar.runtime")


async def run_until_signalled(
    stop: Callable[[float], Coroutine[Any, Any, None]],
    grace: float,
    on_hangup: Callable[[], None] | None = None,
) -> None:
    """Wait for SIGINT/SIGTERM, then `stop(grace)`; a second signal calls `stop(0)`.
    SIGHUP calls `on_hangup` (when given) and serving goes on."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, signalled.set)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        signals = (*signals, signal.SIGHUP)
    try:
        await signalled.wait()
        log.info("draining for up to %.0fs (signal again to stop now)", grace)
        signalled.clear()
        drain = asyncio.create_task(stop(grace))
        forced = asyncio.create_task(signalled.wait())
        await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            await stop(0)
            await drain
        forced.cancel()
        await asyncio.wait({forced})
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
