"""Shadow sampling over real sockets: one pair per sampled local call, never a sensitive
request (the cloud simulator sees none), stops when a budget is exhausted, and the
caller's call neither waits for it nor fails with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sidecar.engine import Engine
from sidecar.errors import ErrorCode, SidecarError
from sidecar.quality import SHADOW_KEY
from sidecar.quality.store import PairStore, read_pairs
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator, profile_by_name
from sidecar.types import ChatRequest, GenerationParams, Message, RoutingHints
from tests.harness import UPSTREAM_KEY, make_config

CLOUD: dict[str, Any] = {"locality": "cloud"}


def _config(ollama: OllamaSimulator, oai: OpenAISimulator, log: Path, **sections: Any) -> Any:
    cloud = {"api_base": oai.base_url, "api_key": UPSTREAM_KEY, "model_info": CLOUD}
    quality = {"sample_rate": 1.0, "compare_with": "cloud-fast", "log_path": str(log)}
    quality.update(sections.pop("quality", {}))
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}),
            ("cloud-fast", "openai/gpt-4o-mini", cloud),
        ],
        quality_monitoring=quality,
        **sections,
    )


def _ask(text: str = "Summarise the meeting notes", **fields: Any) -> ChatRequest:
    return ChatRequest(
        "fast-local", (Message("user", text),), metadata={"task": "summarise"}, **fields
    )


async def test_each_sampled_call_writes_one_pair_and_sensitive_ones_none(tmp_path: Path) -> None:
    log = tmp_path / "quality_log.jsonl"
    instant = profile_by_name("instant")
    async with (
        OllamaSimulator(profile=instant) as ollama,
        OpenAISimulator(profile=instant, api_key=UPSTREAM_KEY) as oai,
    ):
        engine = Engine(_config(ollama, oai, log))
        try:
            for i in range(3):
                answer = await engine.complete(_ask(request_id=f"r{i}"), 5)
                assert answer.route.locality.value == "local"
            sensitive = _ask("Patient record, keep it here", hints=RoutingHints(local_only=True))
            await engine.complete(sensitive, 5)
            assert engine.quality is not None
            await engine.quality.drain()
            cloud_calls = oai.stats.requests
            # The cloud alias itself is never shadowed against itself.
            await engine.complete(ChatRequest("cloud-fast", (Message("user", "hi"),)), 5)
            await engine.quality.drain()
        finally:
            await engine.aclose()
    pairs = list(read_pairs(str(log)))
    assert cloud_calls == 3
    assert len(pairs) == 3
    assert sorted(p["request_id"] for p in pairs) == ["r0", "r1", "r2"]
    pair = pairs[0]
    assert pair["task"] == "summarise"
    assert pair["route"]["deployment"] == "fast-local/0"
    assert pair["prompt_preview"] == "Summarise the meeting notes"
    assert pair["local"]["answer"].startswith("tok0")
    assert pair["shadow"]["answer"]
    assert pair["local"]["locality"] == "local"
    assert pair["shadow"]["locality"] == "cloud"
    assert pair["shadow"]["cost_usd"] > 0
    assert pair["local"]["cost_usd"] == 0
    assert pair["shadow"]["output_tokens"] == 20
    assert pair["local"]["latency_ms"] > 0
    assert not any("Patient" in p["prompt_preview"] for p in pairs)


async def test_the_caller_never_waits_for_or_fails_with_the_shadow(tmp_path: Path) -> None:
    log = tmp_path / "q.jsonl"
    async with (
        OllamaSimulator(profile=profile_by_name("instant")) as ollama,
        OpenAISimulator(api_key=UPSTREAM_KEY, fault=Fault("hang")) as oai,
    ):
        engine = Engine(_config(ollama, oai, log, quality={"max_concurrency": 1, "max_queue": 2}))
        try:
            # The comparison model hangs: every caller still gets its answer at once.
            for i in range(5):
                answer = await asyncio.wait_for(engine.complete(_ask(request_id=f"h{i}"), 5), 10)
                assert answer.content
            assert engine.quality is not None
            assert engine.quality.dropped >= 2  # one in flight, two queued, the rest dropped
        finally:
            await engine.aclose()
    assert not log.exists()


async def test_shadow_calls_count_toward_the_budget_and_stop_at_it(tmp_path: Path) -> None:
    log = tmp_path / "q.jsonl"
    long_prompt = "please summarise these words " * 400  # about 2,400 prompt tokens
    instant = profile_by_name("instant")
    async with (
        OllamaSimulator(profile=instant) as ollama,
        OpenAISimulator(profile=instant, api_key=UPSTREAM_KEY) as oai,
    ):
        config = _config(
            ollama,
            oai,
            log,
            general_settings={"max_budget": 0.0025},  # room for a couple of shadow calls
        )
        engine = Engine(config, data_dir=str(tmp_path))
        await engine.start()
        try:
            assert engine.quality is not None
            for i in range(6):
                request = _ask(
                    long_prompt, request_id=f"b{i}", params=GenerationParams(max_tokens=16)
                )
                await engine.complete(request, 5)
                await engine.quality.drain()
            [status] = await engine.budget_status()
        finally:
            await engine.aclose()
    pairs = list(read_pairs(str(log)))
    assert 1 <= len(pairs) < 6
    assert oai.stats.requests == len(pairs)  # refused shadows never reached the cloud
    assert status.spent == pytest.approx(sum(p["shadow"]["cost_usd"] for p in pairs), abs=1e-5)
    assert status.spent <= 0.0025


async def test_the_egress_refuses_a_sensitive_shadow_everywhere(tmp_path: Path) -> None:
    """Whatever a sampler decided, a shadow of a sensitive request leaves for nowhere."""
    async with OllamaSimulator() as ollama, OpenAISimulator(api_key=UPSTREAM_KEY) as oai:
        engine = Engine(_config(ollama, oai, tmp_path / "q.jsonl"))
        shadow = ChatRequest(
            "fast-local",
            (Message("user", "hi"),),
            metadata={SHADOW_KEY: "1"},
            hints=RoutingHints(local_only=True),
        )
        try:
            with pytest.raises(SidecarError) as err:
                await engine.complete(shadow, 5)
        finally:
            await engine.aclose()
    assert err.value.code is ErrorCode.FAILED_PRECONDITION
    assert ollama.stats.requests == 0
    assert oai.stats.requests == 0


async def test_a_full_log_takes_no_more_pairs(tmp_path: Path) -> None:
    log = tmp_path / "q.jsonl"
    store = PairStore(str(log), max_bytes=300)
    pair = {"route": {}, "local": {"answer": "x" * 100}, "shadow": {"answer": "y" * 100}}
    for _ in range(3):
        await store.append(pair)
    assert len(list(read_pairs(str(log)))) == 1
    assert store.full
