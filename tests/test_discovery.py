"""Context windows discovered from Ollama at start-up."""

from __future__ import annotations

from sidecar.engine import Engine
from sidecar.health.discovery import discover_context_windows
from sidecar.providers import HttpPool, ProviderRegistry
from sidecar.simulate import OllamaSimulator, profile_by_name
from sidecar.types import ChatRequest, Message
from tests.harness import make_config


async def test_unknown_windows_are_asked_of_ollama() -> None:
    async with OllamaSimulator(profile=profile_by_name("instant"), context_length=4096) as sim:
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": sim.base_url}),
                (
                    "pinned",
                    "ollama/llama3.2:8b",
                    {"api_base": sim.base_url, "model_info": {"max_input_tokens": 2048}},
                ),
                ("gone", "ollama/llama3.2:8b", {"api_base": "http://127.0.0.1:9"}),
            ]
        )
        pool = HttpPool()
        try:
            found = await discover_context_windows(config, pool, within=2.0)
        finally:
            await pool.aclose()
        fast = found.groups["fast-local"].deployments[0]
        # Not loaded yet: the Modelfile's num_ctx, not the trained maximum.
        assert (fast.context_window, fast.discovered_window) == (4096, True)
        pinned = found.groups["pinned"].deployments[0]
        assert (pinned.context_window, pinned.discovered_window) == (2048, False)
        assert found.groups["gone"].deployments[0].context_window is None

        # A discovered window is used for routing but never resent as num_ctx.
        engine = Engine(found, ProviderRegistry())
        try:
            request = ChatRequest("fast-local", (Message("user", "hi"),))
            await engine.complete(request, 5)
        finally:
            await engine.aclose()
        assert "num_ctx" not in sim.stats.bodies[-1]["options"]


async def test_a_loaded_model_reports_its_allocated_window() -> None:
    async with OllamaSimulator(
        profile=profile_by_name("instant"), context_length=4096, trained_context_length=131072
    ) as sim:
        config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": sim.base_url})])
        engine = Engine(config, ProviderRegistry())
        try:
            await engine.complete(ChatRequest("fast-local", (Message("user", "hi"),)), 5)
            found = await discover_context_windows(config, engine.providers.pool)
        finally:
            await engine.aclose()
        assert found.groups["fast-local"].deployments[0].context_window == 4096
