"""Real-socket helpers for the HTTP bridge tests, in both of its modes.

in-process  one SidecarProcess serving gRPC and HTTP, the bridge calling its engine
remote      a SidecarProcess serving gRPC, and a BridgeServer in front of it over gRPC
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai

from bridge.app import BridgeSettings
from bridge.remote import RemoteBackend
from bridge.server import BridgeServer
from sidecar.cli.serve import SidecarProcess
from sidecar.config import SidecarConfig
from sidecar.engine import Engine
from sidecar.simulate import OllamaSimulator, OpenAISimulator
from tests.harness import UPSTREAM_KEY, make_config

MODES = ("in-process", "remote")
KEY = "sk-master-test"
EXPECTED = "".join(f"tok{i} " for i in range(20))
USER: list[Any] = [{"role": "user", "content": "Say hello"}]


@dataclass
class Bridge:
    mode: str
    root: str  # http://127.0.0.1:PORT
    sidecar: SidecarProcess
    server: BridgeServer | None  # the standalone bridge, in remote mode

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        options: dict[str, Any] = {"api_key": KEY, "max_retries": 0, "timeout": 10.0}
        options.update(kwargs)
        return openai.AsyncOpenAI(base_url=self.base_url, **options)

    def sync_client(self, **kwargs: Any) -> openai.OpenAI:
        options: dict[str, Any] = {"api_key": KEY, "max_retries": 0, "timeout": 10.0}
        options.update(kwargs)
        return openai.OpenAI(base_url=self.base_url, **options)


@asynccontextmanager
async def running_bridge(
    config: SidecarConfig, mode: str, *, max_body_bytes: int | None = None
) -> AsyncIterator[Bridge]:
    """The bridge on 127.0.0.1 port 0 in `mode`, over a sidecar built from `config`."""
    settings = BridgeSettings(master_key=config.general_settings.master_key, limits=config.limits)
    if max_body_bytes is not None:
        settings = BridgeSettings(settings.master_key, max_body_bytes, config.limits)
    if mode == "in-process":
        sidecar = SidecarProcess(Engine(config), grpc_port=0, http_port=0, http_settings=settings)
        await sidecar.start()
        try:
            yield Bridge(mode, f"http://127.0.0.1:{sidecar.http_port}", sidecar, None)
        finally:
            await sidecar.stop(grace=0)
        return
    sidecar = SidecarProcess(Engine(config), grpc_port=0)
    await sidecar.start()
    try:
        backend = RemoteBackend(f"127.0.0.1:{sidecar.grpc_port}")
        async with BridgeServer(backend, port=0, settings=settings) as server:
            yield Bridge(mode, f"http://127.0.0.1:{server.port}", sidecar, server)
    finally:
        await sidecar.stop(grace=0)


def standard_config(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator, **sections: Any
) -> SidecarConfig:
    """Aliases on both simulated protocols, a cloud one, and a cloud one nobody answers."""
    openai_params = {"api_base": openai_sim.base_url, "api_key": UPSTREAM_KEY}
    sections.setdefault("general_settings", {"master_key": KEY})
    sections.setdefault("timeouts", {"first_token": 5, "idle": 5, "total": 20})
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}),
            ("vllm-local", "openai/qwen2.5", openai_params),
            ("cloud-fast", "openai/gpt-4o-mini", {**openai_params, "model_info": _CLOUD}),
            (
                "gemini",
                "gemini/gemini-2.0-flash",
                {"api_base": "http://127.0.0.1:9", "api_key": "sk-gemini", "model_info": _CLOUD},
            ),
        ],
        **sections,
    )


_CLOUD: Mapping[str, Any] = {"locality": "cloud", "description": "cloud answers"}


@asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        yield session


def sse_events(raw: bytes) -> list[bytes]:
    """The data payloads of an SSE body, checking that every event is one `data:` line."""
    assert raw.endswith(b"\n\n"), raw[-80:]
    events = raw[:-2].split(b"\n\n")
    payloads = []
    for event in events:
        assert event.startswith(b"data: "), event
        assert b"\n" not in event, event
        payloads.append(event[len(b"data: ") :])
    return payloads
