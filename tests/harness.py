"""Real-socket helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from sidecar.cli.serve import SidecarProcess
from sidecar.clock import Clock
from sidecar.config import SidecarConfig, parse_config
from sidecar.engine import Engine
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

# The key the simulated OpenAI-compatible upstreams want from the sidecar.
UPSTREAM_KEY = "sk-upstream"


@dataclass
class Sidecar:
    server: SidecarProcess
    channel: grpc.aio.Channel
    stub: pb_grpc.RouterStub

    @property
    def engine(self) -> Engine:
        return self.server.engine


@asynccontextmanager
async def running_sidecar(
    config: SidecarConfig,
    *,
    clock: Clock | None = None,
    data_dir: str | None = None,
    wall: Callable[[], float] = time.time,
) -> AsyncIterator[Sidecar]:
    """A sidecar on 127.0.0.1, port 0, with a connected client stub."""
    engine = Engine(config, clock=clock, data_dir=data_dir, wall=wall)
    server = SidecarProcess(engine, host="127.0.0.1", grpc_port=0)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield Sidecar(server, channel, pb_grpc.RouterStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0)


def make_config(
    entries: list[tuple[str, str, Mapping[str, Any]]], **sections: Any
) -> SidecarConfig:
    """A config from (alias, model, extra litellm_params) triples plus raw top-level sections.

    Active health probes are off unless a test turns them on, so that no probe
    traffic races a test's own requests.
    """
    model_list = []
    for alias, model, params in entries:
        litellm_params = {"model": model, **{k: v for k, v in params.items() if k != "model_info"}}
        entry: dict[str, Any] = {"model_name": alias, "litellm_params": litellm_params}
        if "model_info" in params:
            entry["model_info"] = params["model_info"]
        model_list.append(entry)
    sections.setdefault("health", {"probe_interval": 0})
    return parse_config({"model_list": model_list, **sections}, source="test", env={})


def fallback_config(first: str, second: str, **sections: Any) -> SidecarConfig:
    """Two local aliases on two upstreams, the first falling back to the second."""
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": first}),
            ("strong-local", "ollama/llama3.3:70b", {"api_base": second}),
        ],
        litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
        **sections,
    )


def chat_request(model: str, text: str = "Say hello", **fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[pb.Message(role="user", content=text)], **fields)


async def stream_chunks(sidecar: Sidecar, request: pb.ChatRequest) -> list[pb.ChatChunk]:
    """Every chunk of one StreamChat call."""
    return [chunk async for chunk in sidecar.stub.StreamChat(request, timeout=10)]


def merged_calls(chunks: list[pb.ChatChunk]) -> list[dict[str, Any]]:
    """Tool-call fragments accumulated by index, as an OpenAI-style caller does."""
    merged: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for call in chunk.tool_calls:
            entry = merged.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] = entry["id"] or call.id
            entry["name"] = entry["name"] or call.name
            entry["arguments"] += call.arguments
    return [merged[i] for i in sorted(merged)]


async def wait_until(predicate: Callable[[], bool], within: float) -> bool:
    """Poll `predicate` until it holds or `within` seconds pass; return whether it held."""
    end = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(0.002)
    return True
