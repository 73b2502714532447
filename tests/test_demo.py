"""The demo holds up: `make run`'s configuration under mixed traffic keeps its local models.

With probes running every 0.1 s (time compressed: `make run` probes every 10 s), a bounded
stretch of traffic over both doors (plain, streamed, tools, JSON, auto with code and with
sensitive data, cloud) must leave every local alias SERVING in grpc.health.v1 throughout,
every local deployment up or cold, and every local request answered locally.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import openai
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.health import State
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from tests.demo import MASTER_KEY, Demo, running_demo

LOCAL_ALIASES = ("fast-local", "strong-local", "code-local")
CALLS = 36  # bounded in count; the whole test is bounded in time below
CONCURRENCY = 6
CODE = "Fix this:\n```python\ndef f(x):\n    return x +\n```"
SENSITIVE = "Patient John Doe, SSN 123-45-6789, asks about his results."
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def _watch(stub: health_pb2_grpc.HealthStub, service: str, seen: list[int]) -> None:
    request = health_pb2.HealthCheckRequest(service=service)
    async for reply in stub.Watch(request):
        seen.append(reply.status)


async def _grpc_call(stub: pb_grpc.RouterStub, model: str, text: str, stream: bool) -> str:
    request = pb.ChatRequest(model=model, messages=[pb.Message(role="user", content=text)])
    # The seed's master key guards the gRPC door too.
    key = (("authorization", f"Bearer {MASTER_KEY}"),)
    if stream:
        chunks = [c async for c in stub.StreamChat(request, timeout=15, metadata=key)]
        assert "".join(c.delta for c in chunks)
        return str(chunks[0].route.deployment)
    reply = await stub.Chat(request, timeout=15, metadata=key)
    assert reply.content
    return str(reply.route.deployment)


async def _http_call(client: openai.AsyncOpenAI, model: str, kind: str) -> str:
    messages: Any = [{"role": "user", "content": "Where is Lima?"}]
    if kind == "tools":
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=messages, tools=TOOLS
        )
        assert raw.parse().choices[0].finish_reason == "tool_calls"
    elif kind == "json":
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=messages, response_format={"type": "json_object"}
        )
        assert raw.parse().choices[0].message.content
    else:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages)
        assert raw.parse().choices[0].message.content
    return raw.headers["x-sidecar-deployment"]


def _traffic(demo: Demo, stub: pb_grpc.RouterStub, client: openai.AsyncOpenAI) -> list[Any]:
    """(expected deployment prefix or None, call) pairs, cycling through the mixes."""
    mixes: list[tuple[str | None, Any]] = [
        ("fast-local/", lambda: _grpc_call(stub, "fast-local", "hi", True)),
        ("strong-local/", lambda: _grpc_call(stub, "strong-local", "Explain the plan", False)),
        ("code-local/", lambda: _grpc_call(stub, "auto", CODE, True)),
        ("", lambda: _grpc_call(stub, "auto", SENSITIVE, False)),  # any local one
        (None, lambda: _grpc_call(stub, "cloud-fast", "hi", True)),
        ("fast-local/", lambda: _http_call(client, "fast-local", "tools")),
        ("code-local/", lambda: _http_call(client, "code-local", "json")),
        ("strong-local/", lambda: _http_call(client, "strong-local", "plain")),
        (None, lambda: _http_call(client, "cloud-fast", "json")),
    ]
    return list(itertools.islice(itertools.cycle(mixes), CALLS))


async def test_mixed_traffic_keeps_every_local_model_serving() -> None:
    async with asyncio.timeout(45), running_demo(probe_interval=0.1) as demo:
        engine = demo.server.engine
        local_ids = [d.id for a in LOCAL_ALIASES for d in engine.config.groups[a].deployments]
        states: list[tuple[str, State]] = []
        engine.health.on_change(
            lambda: states.extend((i, engine.health[i].state) for i in local_ids)
        )
        async with (
            grpc.aio.insecure_channel(demo.grpc_address) as channel,
            openai.AsyncOpenAI(
                base_url=demo.base_url, api_key=MASTER_KEY, max_retries=0, timeout=15
            ) as client,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            seen: dict[str, list[int]] = {alias: [] for alias in LOCAL_ALIASES}
            watchers = [asyncio.create_task(_watch(health, a, seen[a])) for a in LOCAL_ALIASES]
            try:
                stub = pb_grpc.RouterStub(channel)
                gate = asyncio.Semaphore(CONCURRENCY)
                sensitive_ids = set(local_ids)

                async def run(expected: str | None, call: Any) -> None:
                    async with gate:
                        deployment = await call()
                    if expected == "":
                        assert deployment in sensitive_ids, deployment
                    elif expected is not None:
                        assert deployment.startswith(expected), deployment

                # strong-local and code-local share one simulated Ollama: a call to one
                # of them, then probe rounds, must not make the other look missing.
                await run("code-local/", lambda: _grpc_call(stub, "code-local", "hi", False))
                await asyncio.sleep(0.3)
                await asyncio.gather(*(run(e, c) for e, c in _traffic(demo, stub, client)))
                await asyncio.sleep(0.3)  # a few more probe rounds after the traffic
            finally:
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
        for alias in LOCAL_ALIASES:
            assert seen[alias], f"no health status for {alias}"
            assert set(seen[alias]) == {health_pb2.HealthCheckResponse.SERVING}, (alias, seen)
        assert {state for _, state in states} <= {State.UP, State.COLD}, states
        for deployment in local_ids:
            assert engine.health.is_available(deployment)
            assert engine.health[deployment].state is State.UP  # every one answered a call


async def test_cloud_reasoning_is_served_by_the_anthropic_simulator() -> None:
    async with running_demo() as demo:
        [deployment] = demo.server.engine.config.groups["cloud-reasoning"].deployments
        assert deployment.provider.value == "anthropic"
        assert deployment.simulated
        async with grpc.aio.insecure_channel(demo.grpc_address) as channel:
            stub = pb_grpc.RouterStub(channel)
            request = pb.ChatRequest(
                model="cloud-reasoning", messages=[pb.Message(role="user", content="Hi")]
            )
            key = (("authorization", f"Bearer {MASTER_KEY}"),)
            chunks = [c async for c in stub.StreamChat(request, timeout=20, metadata=key)]
    assert chunks[0].route.provider == "anthropic"
    assert chunks[0].route.upstream_model == "claude-sonnet-4-20250514"
    assert "".join(c.delta for c in chunks)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
