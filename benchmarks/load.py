"""The load generator: clients that time one chat each, and the loops that drive them.

Each client call returns a Sample (time to first token, total time, success,
and where the sidecar sent it). `closed_loop` keeps a fixed number of calls in
flight; `open_loop` starts calls at a fixed rate whatever happens to earlier
ones, so a slow server cannot slow the arrivals down and hide its own latency
(no coordinated omission). A call the generator itself starts late, because it
fell behind, records how late (`Sample.late`), so that a report can tell the
server's latency from the generator's. Both loops are bounded in count and in
time, and every call is bounded by CALL_TIMEOUT.

Clients: `ollama_direct` / `ollama_unary` (NDJSON straight to an Ollama-style
upstream), `openai_stream` / `openai_unary` (an OpenAI-style server or the HTTP bridge, SSE
or JSON), `anthropic_stream` (Anthropic Messages SSE, straight to its simulator or to
the bridge's Messages door), `gemini_stream` (Gemini SSE straight to its simulator),
`responses_stream` (the bridge's Responses door),
`grpc_stream` / `grpc_unary` / `stream_chat` (the sidecar over gRPC).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import orjson

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

PROMPT = "Classify this as positive or negative: Great product!"
CALL_TIMEOUT = 30.0
_FAILURES = (aiohttp.ClientError, grpc.aio.AioRpcError, OSError, TimeoutError, ValueError)
_LOCALITY = {pb.LOCALITY_LOCAL: "local", pb.LOCALITY_CLOUD: "cloud"}


@dataclass(frozen=True, slots=True)
class Sample:
    ttft: float  # seconds from sending the request to the first content token
    total: float  # seconds from sending the request to the end of the answer
    ok: bool
    tokens: int = 0  # content tokens received (before the failure, for a failed call)
    start: float = 0.0  # time.perf_counter() when the call was due to start
    late: float = 0.0  # seconds the open loop started it after it was due
    deployment: str = ""  # the deployment that answered, when the sidecar said
    locality: str = ""  # local | cloud, likewise
    prompt_tokens: int = 0
    completion_tokens: int = 0
    label: str = ""  # what the caller sent (a workload's prompt category)
    error: str = ""


Call = Callable[[], Awaitable[Sample]]


async def closed_loop(
    call: Call, concurrency: int, requests: int, time_limit: float, ramp: float = 0.0
) -> list[Sample]:
    """`requests` calls with `concurrency` in flight, stopping early after `time_limit` s.

    With `ramp`, the callers start evenly spread over that many seconds instead of
    all at once: against an upstream whose timing is fixed, callers that start
    together stay in lockstep and their tokens arrive in bursts no real traffic has.
    """
    samples: list[Sample] = []
    end = time.perf_counter() + time_limit
    remaining = requests

    async def worker(index: int) -> None:
        nonlocal remaining
        if ramp:
            await asyncio.sleep(ramp * index / concurrency)
        while remaining > 0 and time.perf_counter() < end:
            remaining -= 1
            samples.append(await _safe(call))

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples


async def open_loop(call: Call, rate: float, requests: int, time_limit: float) -> list[Sample]:
    """Start calls at `rate` per second (evenly spaced), at most `requests` of them and none
    later than `time_limit` s after the first; wait for all of them to end."""
    start = time.perf_counter()
    tasks = []
    for i in range(requests):
        due = start + i / rate
        if due - start > time_limit:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_due(call, due)))
    return list(await asyncio.gather(*tasks))


async def _due(call: Call, due: float) -> Sample:
    late = max(0.0, time.perf_counter() - due)
    return dataclasses.replace(await _safe(call), start=due, late=late)


async def _safe(call: Call) -> Sample:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await call()
    except _FAILURES as exc:
        elapsed = time.perf_counter() - start
        return Sample(elapsed, elapsed, ok=False, start=start, error=_describe(exc))


class Timer:
    """Times one call from its creation: the first token and the end."""

    __slots__ = ("start", "tokens", "ttft")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ttft = 0.0
        self.tokens = 0

    def token(self) -> None:
        self.tokens += 1
        if self.tokens == 1:
            self.ttft = time.perf_counter() - self.start

    def sample(self, ok: bool, **fields: Any) -> Sample:
        total = time.perf_counter() - self.start
        ttft = self.ttft if self.tokens else total
        return Sample(ttft, total, ok, tokens=self.tokens, start=self.start, **fields)


# -- direct clients (straight to a simulated upstream) --------------------------------------


def ollama_direct(session: aiohttp.ClientSession, root_url: str, model: str) -> Call:
    """Stream one chat straight from an Ollama(-simulated) server, reading NDJSON."""
    url = f"{root_url}/api/chat"
    body = orjson.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    headers = {"Content-Type": "application/json"}

    async def call() -> Sample:
        timer = Timer()
        done = False
        tail = b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if not line:
                        continue
                    frame = orjson.loads(line)
                    if frame.get("message", {}).get("content"):
                        timer.token()
                    done = done or bool(frame.get("done"))
        return timer.sample(ok=done and timer.tokens > 0)

    return call


def ollama_unary(session: aiohttp.ClientSession, root_url: str, model: str) -> Call:
    """One non-streamed chat straight from an Ollama(-simulated) server."""
    url = f"{root_url}/api/chat"
    body = orjson.dumps(
        {"model": model, "stream": False, "messages": [{"role": "user", "content": PROMPT}]}
    )
    return _unary(session, url, body, {"Content-Type": "application/json"}, _ollama_text)


def openai_stream(session: aiohttp.ClientSession, base_url: str, model: str, api_key: str) -> Call:
    """Stream one chat from an OpenAI-compatible server, timing the first content token."""
    url = f"{base_url}/chat/completions"
    body = orjson.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}

    async def call() -> Sample:
        timer = Timer()
        done = False
        tail = b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                events = (tail + data).split(b"\n\n")
                tail = events.pop()
                for event in events:
                    payload = event[6:] if event.startswith(b"data: ") else b""
                    if payload == b"[DONE]":
                        done = True
                    elif payload and _content(payload):
                        timer.token()
        return timer.sample(ok=done and timer.tokens > 0)

    return call


def anthropic_stream(
    session: aiohttp.ClientSession, root_url: str, model: str, api_key: str
) -> Call:
    """Stream one chat from an Anthropic Messages server, timing the first text delta."""
    url = f"{root_url}/v1/messages"
    messages = [{"role": "user", "content": PROMPT}]
    body = orjson.dumps({"model": model, "max_tokens": 256, "stream": True, "messages": messages})
    headers = {
        "Content-Type": "application/json",
        "x-api-key": api_key,
        "anthropic-version": "2023-06-01",
    }

    def token(event: bytes) -> bool:
        return event.startswith(b"event: content_block_delta") and b'"text_delta"' in event

    def done(event: bytes) -> bool:
        return event.startswith(b"event: message_stop")

    return _sse_call(session, url, body, headers, token, done)


def gemini_stream(session: aiohttp.ClientSession, root_url: str, model: str, api_key: str) -> Call:
    """Stream one chat from a Gemini server (`streamGenerateContent?alt=sse`), timing the
    first text part; the answer is whole once a chunk carried its finishReason."""
    url = f"{root_url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]})
    headers = {"Content-Type": "application/json", "x-goog-api-key": api_key}

    def token(event: bytes) -> bool:
        return b'"text":"' in event and b'"thought":true' not in event

    def done(event: bytes) -> bool:
        return b'"finishReason"' in event

    return _sse_call(session, url, body, headers, token, done)


def _sse_call(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    token: Callable[[bytes], bool],
    done: Callable[[bytes], bool],
) -> Call:
    """A streamed call whose SSE events are told apart by `done` (the last one) and
    `token` (one carrying text), on the raw event bytes."""

    async def call() -> Sample:
        timer = Timer()
        finished = False
        tail = b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                events = (tail + data).replace(b"\r\n", b"\n").split(b"\n\n")
                tail = events.pop()
                for event in events:
                    if done(event):
                        finished = True
                    elif token(event):
                        timer.token()
        return timer.sample(ok=finished and timer.tokens > 0)

    return call


def responses_stream(
    session: aiohttp.ClientSession, base_url: str, model: str, api_key: str
) -> Call:
    """Stream one response from a Responses API server (the bridge's /v1/responses),
    timing the first text delta."""
    url = f"{base_url}/responses"
    body = orjson.dumps({"model": model, "stream": True, "input": PROMPT})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}

    async def call() -> Sample:
        timer = Timer()
        done = False
        tail = b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                events = (tail + data).split(b"\n\n")
                tail = events.pop()
                for event in events:
                    if event.startswith(b"event: response.output_text.delta"):
                        timer.token()
                    elif event.startswith(b"event: response.completed"):
                        done = True
        return timer.sample(ok=done and timer.tokens > 0)

    return call


def _content(payload: bytes) -> str:
    choices: list[dict[str, Any]] = orjson.loads(payload).get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def openai_unary(session: aiohttp.ClientSession, base_url: str, model: str, api_key: str) -> Call:
    """One non-streamed chat from an OpenAI-compatible server (`base_url` ends in /v1)."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}]})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    return _unary(session, f"{base_url}/chat/completions", body, headers, _openai_text)


def _unary(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    text: Callable[[Any], str],
) -> Call:
    async def call() -> Sample:
        timer = Timer()
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            content = text(orjson.loads(await response.read()))
        if content:
            timer.token()  # a whole answer: its first token arrives with its last
        return timer.sample(ok=bool(content))

    return call


def _ollama_text(body: Any) -> str:
    return str(body.get("message", {}).get("content") or "")


def _openai_text(body: Any) -> str:
    choices = body.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


# -- the sidecar over gRPC ------------------------------------------------------------------


def chat_request(model: str, text: str = PROMPT) -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[pb.Message(role="user", content=text)])


def grpc_stream(stub: pb_grpc.RouterStub, model: str, key: str | None = None) -> Call:
    """Stream one chat through the sidecar's StreamChat (with the master key, if any)."""
    request = chat_request(model)
    metadata = _auth(key)

    async def call() -> Sample:
        return await stream_chat(stub, request, metadata)

    return call


def _auth(key: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {key}"),) if key else None


async def stream_chat(
    stub: pb_grpc.RouterStub,
    request: pb.ChatRequest,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Sample:
    """One StreamChat call, noting the route and usage the sidecar reports.

    A failure after some tokens comes back as a failed sample with those tokens
    counted, so that mid-stream failures can be told from the others.
    """
    timer = Timer()
    route: pb.RouteTaken | None = None
    usage: pb.Usage | None = None
    try:
        async for chunk in stub.StreamChat(request, timeout=CALL_TIMEOUT, metadata=metadata):
            if chunk.delta:
                timer.token()
            if chunk.HasField("route"):
                route = chunk.route
            if chunk.HasField("usage"):
                usage = chunk.usage
    except grpc.aio.AioRpcError as exc:
        return timer.sample(False, error=_describe(exc), **_route_fields(route, usage))
    return timer.sample(timer.tokens > 0, **_route_fields(route, usage))


def grpc_unary(stub: pb_grpc.RouterStub, model: str, key: str | None = None) -> Call:
    """One call of the sidecar's unary Chat (with the master key, if any)."""
    request = chat_request(model)
    metadata = _auth(key)

    async def call() -> Sample:
        timer = Timer()
        response = await stub.Chat(request, timeout=CALL_TIMEOUT, metadata=metadata)
        if response.content:
            timer.token()
        fields = _route_fields(response.route, response.usage)
        return timer.sample(bool(response.content), **fields)

    return call


def _route_fields(route: pb.RouteTaken | None, usage: pb.Usage | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if route is not None:
        fields["deployment"] = route.deployment
        fields["locality"] = _LOCALITY.get(route.locality, "")
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
    return fields


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


# -- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]
