"""The engine side of shadow sampling: one shadow call, run to the end like any call."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.engine.stream import ChatStream
from sidecar.quality import ShadowAnswer, ShadowRun
from sidecar.types import ChatRequest, Usage

SHADOW_TIMEOUT = 120.0  # seconds a shadow call may take, whatever the deployment allows


def shadow_runner(
    stream: Callable[[ChatRequest, float | None], ChatStream],
    now: Callable[[], float],
    limit: int,
) -> ShadowRun:
    """A ShadowRun over `stream` (the engine's): keeps the first `limit` characters."""

    async def run(request: ChatRequest) -> ShadowAnswer:
        started = now()
        call = stream(request, SHADOW_TIMEOUT)
        parts: list[str] = []
        size = 0
        usage: Usage | None = None
        try:
            async for chunk in call:
                if chunk.content and size < limit:
                    parts.append(chunk.content)
                    size += len(chunk.content)
                if chunk.usage is not None:
                    usage = chunk.usage
        finally:
            await call.aclose()
        latency = now() - started
        cost = await call.cost()
        return ShadowAnswer("".join(parts)[:limit], usage, latency, call.ttft, cost, call.route)

    return run
