"""The load generator: clients that time one streamed chat each, and the loops that drive them.

Each client call returns a Sample (time to first token, total time, success).
`closed_loop` keeps a fixed number of calls in flight; `open_loop` starts calls
at a fixed rate whatever happens to earlier ones, so a slow server cannot slow
the arrivals down and hide its own latency (no coordinated omission). Both are
bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import grpc
import orjson

from sidecar.api import router_pb2 as pb
from sidecar.api import router_pb2_grpc as pb_grpc

PROMPT = "Classify this as positive or negative: Great product!"


@dataclass(frozen=True, slots=True)
class Sample:
    ttft: float  # seconds from sending the request to the first content token
    total: float  # seconds from sending the request to the end of the answer
    ok: bool
    tokens: int = 0


Call = Callable[[], Awaitable[Sample]]


async def closed_loop(
    call: Call, concurrency: int, requests: int, time_limit: float
) -> list[Sample]:
    """`requests` calls with `concurrency` in flight, stopping early after `time_limit` s."""
    samples: list[Sample] = []
    end = time.perf_counter() + time_limit
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < end:
            remaining -= 1
            samples.append(await _safe(call))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


async def open_loop(call: Call, rate: float, requests: int, time_limit: float) -> list[Sample]:
    """Start calls at `rate` per second (evenly spaced), at most `requests` of them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(requests):
        when = start + i / rate
        if when - start > time_limit:
            break
        delay = when - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_safe(call)))
    return list(await asyncio.gather(*tasks))


async def _safe(call: Call) -> Sample:
    start = time.perf_counter()
    try:
        return await call()
    except (aiohttp.ClientError, grpc.aio.AioRpcError, OSError, TimeoutError, ValueError):
        elapsed = time.perf_counter() - start
        return Sample(elapsed, elapsed, ok=False)


def ollama_direct(session: aiohttp.ClientSession, root_url: str, model: str) -> Call:
    """Stream one chat straight from an Ollama(-simulated) server, reading NDJSON."""
    url = f"{root_url}/api/chat"
    body = orjson.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    headers = {"Content-Type": "application/json"}

    async def call() -> Sample:
        start = time.perf_counter()
        ttft = 0.0
        tokens = 0
        tail = b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if line and orjson.loads(line).get("message", {}).get("content"):
                        tokens += 1
                        if tokens == 1:
                            ttft = time.perf_counter() - start
        return Sample(ttft, time.perf_counter() - start, ok=tokens > 0, tokens=tokens)

    return call


def grpc_stream(stub: pb_grpc.RouterStub, model: str) -> Call:
    """Stream one chat through the sidecar's StreamChat."""
    request = pb.ChatRequest(model=model, messages=[pb.Message(role="user", content=PROMPT)])

    async def call() -> Sample:
        start = time.perf_counter()
        ttft = 0.0
        tokens = 0
        async for chunk in stub.StreamChat(request, timeout=60):
            if chunk.delta:
                tokens += 1
                if tokens == 1:
                    ttft = time.perf_counter() - start
        return Sample(ttft, time.perf_counter() - start, ok=tokens > 0, tokens=tokens)

    return call


def grpc_unary(stub: pb_grpc.RouterStub, model: str) -> Call:
    request = pb.ChatRequest(model=model, messages=[pb.Message(role="user", content=PROMPT)])

    async def call() -> Sample:
        start = time.perf_counter()
        response = await stub.Chat(request, timeout=60)
        elapsed = time.perf_counter() - start
        return Sample(elapsed, elapsed, ok=bool(response.content), tokens=1)

    return call


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]
