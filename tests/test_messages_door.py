"""The Anthropic Messages door driven by the official `anthropic` SDK, in both bridge modes:
SDK -> bridge (/v1/messages) -> engine -> the Anthropic simulator (native, thinking
signatures checked), or the Ollama and OpenAI-compatible simulators (translated)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from anthropic.types import MessageParam, ToolParam

from bridge.app import BridgeSettings
from bridge.backend import InProcessBackend
from bridge.server import BridgeServer
from sidecar.config import SidecarConfig
from sidecar.engine import Engine
from sidecar.simulate import (
    AnthropicSimulator,
    Fault,
    OllamaSimulator,
    OpenAISimulator,
    SimProfile,
    profile_by_name,
)
from tests.bridge_harness import EXPECTED, KEY, MODES, Bridge, running_bridge
from tests.harness import UPSTREAM_KEY, make_config

CLAUDE_KEY = "sk-ant-sim"
ASK: list[MessageParam] = [{"role": "user", "content": "What is the capital of Peru?"}]
LOOKUP: ToolParam = {
    "name": "lookup",
    "description": "Look a city up.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
SSN_PROMPT = "Patient John Doe, SSN 123-45-6789, asks about his results."
ALIASES = ("claude", "fast-local", "vllm-local")


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicSimulator]:
    async with AnthropicSimulator(profile=profile_by_name("instant"), api_key=CLAUDE_KEY) as sim:
        yield sim


def _config(
    claude: AnthropicSimulator, ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> SidecarConfig:
    return make_config(
        [
            (
                "claude",
                "claude-sonnet-4-20250514",
                {
                    "api_base": claude.base_url,
                    "api_key": CLAUDE_KEY,
                    "model_info": {"locality": "cloud"},
                },
            ),
            ("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}),
            (
                "vllm-local",
                "openai/qwen2.5",
                {"api_base": openai_sim.base_url, "api_key": UPSTREAM_KEY},
            ),
            # Nothing listens there: every attempt fails to connect.
            ("down-local", "ollama/llama3.2:8b", {"api_base": "http://127.0.0.1:9"}),
        ],
        general_settings={"master_key": KEY},
        timeouts={"first_token": 5, "idle": 5, "total": 20},
    )


@pytest.fixture(params=MODES)
async def bridge(
    request: pytest.FixtureRequest,
    claude: AnthropicSimulator,
    ollama: OllamaSimulator,
    openai_sim: OpenAISimulator,
) -> AsyncIterator[Bridge]:
    config = _config(claude, ollama, openai_sim)
    async with running_bridge(config, request.param) as running:
        yield running


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=bridge.root, api_key=KEY, max_retries=0, timeout=10.0
    ) as sdk:
        yield sdk


async def _raw_events(root: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, payload) pairs of a streamed answer, each checked to be one
    `event:` line and one `data:` line whose type is the event's name."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{root}/v1/messages", json=body, headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = await response.read()
    events = []
    for frame in raw.decode().split("\n\n")[:-1]:
        name_line, data_line = frame.split("\n")
        assert name_line.startswith("event: ")
        assert data_line.startswith("data: ")
        name, payload = name_line[7:], orjson.loads(data_line[6:])
        assert payload["type"] == name
        events.append((name, payload))
    return events


# -- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
async def test_whole_message(client: anthropic.AsyncAnthropic, alias: str) -> None:
    message = await client.messages.create(
        model=alias, max_tokens=100, messages=ASK, system="Be terse."
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == alias
    assert message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == EXPECTED
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 20
    assert message.usage.input_tokens > 0


@pytest.mark.parametrize("alias", ALIASES)
async def test_streamed_message(client: anthropic.AsyncAnthropic, alias: str) -> None:
    async with client.messages.stream(
        model=alias, max_tokens=100, messages=ASK, system=[{"type": "text", "text": "Be terse."}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == EXPECTED
    assert final.content[0].type == "text"
    assert final.content[0].text == EXPECTED
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 20
    assert final.usage.input_tokens > 0


async def test_event_sequence(bridge: Bridge) -> None:
    body = {"model": "fast-local", "max_tokens": 50, "messages": ASK, "stream": True}
    events = await _raw_events(bridge.root, body)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["role"] == "assistant"
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [p["delta"] for name, p in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == EXPECTED
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 20


async def test_generation_settings(
    client: anthropic.AsyncAnthropic, claude: AnthropicSimulator, openai_sim: OpenAISimulator
) -> None:
    capped = await client.messages.create(model="claude", max_tokens=3, messages=ASK)
    assert capped.stop_reason == "max_tokens"
    # This SDK version no longer types the sampling settings; the API still takes them.
    sampling: Any = {"temperature": 0.2, "top_p": 0.9, "top_k": 40}
    stopped = await client.messages.create(
        model="claude", max_tokens=100, messages=ASK, stop_sequences=["tok3"], extra_body=sampling
    )
    assert stopped.stop_reason == "end_turn"
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == "tok0 tok1 tok2 "
    sent = claude.stats.bodies[-1]
    # pytest.approx: the gRPC contract carries the sampling settings as 32-bit floats.
    assert (sent["temperature"], sent["top_p"]) == (pytest.approx(0.2), pytest.approx(0.9))
    assert sent["top_k"] == 40
    assert sent["stop_sequences"] == ["tok3"]
    capped = await client.messages.create(model="vllm-local", max_tokens=3, messages=ASK)
    assert capped.stop_reason == "max_tokens"
    await client.messages.create(
        model="vllm-local",
        max_tokens=100,
        messages=ASK,
        stop_sequences=["tok3"],
        extra_body=sampling,
    )
    sent = openai_sim.stats.bodies[-1]
    assert (sent["temperature"], sent["top_p"]) == (pytest.approx(0.2), pytest.approx(0.9))
    assert sent["stop"] == ["tok3"]


async def test_images_reach_every_protocol(
    client: anthropic.AsyncAnthropic, claude: AnthropicSimulator, ollama: OllamaSimulator
) -> None:
    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n a one-pixel picture").decode()
    looked: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": pixel},
                },
                {"type": "text", "text": "What is in this picture?"},
            ],
        }
    ]
    for alias in ("claude", "fast-local"):
        message = await client.messages.create(model=alias, max_tokens=50, messages=looked)
        assert message.content[0].type == "text"
    sent = claude.stats.bodies[-1]["messages"][0]["content"]
    assert {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": pixel},
    } in sent
    assert ollama.stats.bodies[-1]["messages"][0]["images"] == [pixel]


# -- tools ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_loop(client: anthropic.AsyncAnthropic, alias: str, stream: bool) -> None:
    ask: list[MessageParam] = [{"role": "user", "content": "Look Lima up."}]

    async def turn(messages: list[MessageParam]) -> anthropic.types.Message:
        if not stream:
            return await client.messages.create(
                model=alias, max_tokens=200, messages=messages, tools=[LOOKUP]
            )
        async with client.messages.stream(
            model=alias, max_tokens=200, messages=messages, tools=[LOOKUP]
        ) as events:
            return await events.get_final_message()

    first = await turn(ask)
    assert first.stop_reason == "tool_use"
    used = [b for b in first.content if b.type == "tool_use"]
    assert len(used) == 1
    assert used[0].name == "lookup"
    assert isinstance(used[0].input, dict)
    assert isinstance(used[0].input["city"], str)
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": used[0].id, "content": "Lima: 10M"}],
    }
    assistant: MessageParam = {"role": "assistant", "content": first.content}
    second = await turn([*ask, assistant, result])
    assert second.stop_reason == "end_turn"
    assert second.content[-1].type == "text"
    assert second.content[-1].text == EXPECTED


async def test_forced_tool_choice_reaches_every_protocol(
    client: anthropic.AsyncAnthropic,
) -> None:
    for alias in ALIASES:
        message = await client.messages.create(
            model=alias,
            max_tokens=200,
            messages=[{"role": "user", "content": "Hello there."}],
            tools=[LOOKUP],
            tool_choice={"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        )
        assert [b.type for b in message.content if b.type == "tool_use"] == ["tool_use"], alias
        if alias == "fast-local":
            continue  # Ollama's API has no tool_choice
        none = await client.messages.create(
            model=alias,
            max_tokens=200,
            messages=[{"role": "user", "content": "Look Lima up."}],
            tools=[LOOKUP],
            tool_choice={"type": "none"},
        )
        assert none.stop_reason == "end_turn", alias


async def test_a_silent_stream_gets_pings() -> None:
    """A model that pauses between tokens (0.5 s here) gets a ping in each pause longer
    than the interval (0.05 s here), between the deltas and never inside an event."""
    slow = SimProfile(tokens_per_second=(2.0, 2.0), answer_tokens=3)
    async with OllamaSimulator(profile=slow) as sim:
        config = make_config([("slow-local", "ollama/llama3.2:8b", {"api_base": sim.base_url})])
        engine = Engine(config)
        await engine.start()
        try:
            settings = BridgeSettings(ping_interval=0.05)
            async with BridgeServer(InProcessBackend(engine), port=0, settings=settings) as server:
                body = {"model": "slow-local", "max_tokens": 10, "messages": ASK, "stream": True}
                events = await _raw_events(f"http://127.0.0.1:{server.port}", body)
        finally:
            await engine.aclose()
    kinds = [name for name, _ in events]
    deltas = [p["delta"]["text"] for name, p in events if name == "content_block_delta"]
    assert "".join(deltas) == "tok0 tok1 tok2 "
    first_delta = kinds.index("content_block_delta")
    last_delta = len(kinds) - 1 - kinds[::-1].index("content_block_delta")
    assert "ping" in kinds[first_delta:last_delta]


# -- Claude natively: thinking and caching ---------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_loop_keeps_signatures(
    client: anthropic.AsyncAnthropic, claude: AnthropicSimulator, stream: bool
) -> None:
    ask: list[MessageParam] = [{"role": "user", "content": "Look Lima up."}]
    first: anthropic.types.Message
    if stream:
        async with client.messages.stream(
            model="claude", max_tokens=2048, messages=ask, tools=[LOOKUP], thinking=THINKING
        ) as events:
            first = await events.get_final_message()
    else:
        first = await client.messages.create(
            model="claude", max_tokens=2048, messages=ask, tools=[LOOKUP], thinking=THINKING
        )
    kinds = [b.type for b in first.content]
    assert kinds[0] == "thinking"
    assert "tool_use" in kinds
    thought = first.content[0]
    assert thought.type == "thinking"
    assert thought.thinking
    assert thought.signature == claude.sign(thought.thinking)
    used = next(b for b in first.content if b.type == "tool_use")
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": used.id, "content": "Lima: 10M"}],
    }
    assistant: MessageParam = {"role": "assistant", "content": first.content}
    second = await client.messages.create(
        model="claude",
        max_tokens=2048,
        messages=[*ask, assistant, result],
        tools=[LOOKUP],
        thinking=THINKING,
    )
    assert second.stop_reason == "end_turn"
    assert second.content[-1].type == "text"
    assert second.content[-1].text == EXPECTED
    sent = claude.stats.bodies[-1]["messages"][1]["content"][0]
    assert sent == {
        "type": "thinking",
        "thinking": thought.thinking,
        "signature": thought.signature,
    }
    # The simulator, like the API, refuses a loop whose thinking was altered.
    altered: MessageParam = {
        "role": "assistant",
        "content": [
            {
                "type": "thinking",
                "thinking": thought.thinking + " ",
                "signature": thought.signature,
            },
            {"type": "tool_use", "id": used.id, "name": used.name, "input": used.input},
        ],
    }
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(
            model="claude",
            max_tokens=2048,
            messages=[*ask, altered, result],
            tools=[LOOKUP],
            thinking=THINKING,
        )
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert "thinking" in refused.value.message


async def test_cache_control_reaches_claude(
    client: anthropic.AsyncAnthropic, claude: AnthropicSimulator
) -> None:
    cached: ToolParam = {**LOOKUP, "cache_control": {"type": "ephemeral"}}
    system: Any = [{"type": "text", "text": "You are a geographer. " * 50}]
    usages = []
    for _ in range(2):
        message = await client.messages.create(
            model="claude", max_tokens=100, messages=ASK, tools=[cached], system=system
        )
        usages.append(message.usage)
    assert claude.stats.bodies[-1]["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert (usages[0].cache_creation_input_tokens or 0) > 0
    assert (usages[1].cache_read_input_tokens or 0) > 0
    assert usages[1].cache_creation_input_tokens == 0


async def test_block_cache_breakpoints_reach_claude_only(
    client: anthropic.AsyncAnthropic, claude: AnthropicSimulator, openai_sim: OpenAISimulator
) -> None:
    """Where a coding agent puts its breakpoints: the system prompt's last block and the
    latest user turn."""
    ephemeral: Any = {"type": "ephemeral"}
    system: Any = [
        {"type": "text", "text": "You are a coding agent."},
        {"type": "text", "text": "Project notes. " * 60, "cache_control": ephemeral},
    ]
    turn: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Context."},
                {
                    "type": "text",
                    "text": "What is the capital of Peru?",
                    "cache_control": ephemeral,
                },
            ],
        }
    ]
    usages = []
    for _ in range(2):
        message = await client.messages.create(
            model="claude", max_tokens=100, messages=turn, system=system
        )
        usages.append(message.usage)
    sent = claude.stats.bodies[-1]
    assert sent["system"] == [
        {
            "type": "text",
            "text": "You are a coding agent.\n" + "Project notes. " * 60,
            "cache_control": ephemeral,
        }
    ]
    assert sent["messages"][-1]["content"][-1]["cache_control"] == ephemeral
    assert "cache_breakpoints" not in sent
    assert (usages[0].cache_creation_input_tokens or 0) > 0
    assert (usages[1].cache_read_input_tokens or 0) > 0
    # Another protocol gets the plain translation, and no marker.
    await client.messages.create(model="vllm-local", max_tokens=100, messages=turn, system=system)
    forwarded = openai_sim.stats.bodies[-1]
    assert "cache_breakpoints" not in forwarded
    assert forwarded["messages"][0]["role"] == "system"
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(
            model="claude",
            max_tokens=100,
            messages=ASK,
            system=[{"type": "text", "text": "x", "cache_control": {"type": "forever"}}],  # type: ignore[typeddict-item]
        )
    assert "system.0.cache_control" in bad.value.message


async def test_models_list_for_anthropic_clients(client: anthropic.AsyncAnthropic) -> None:
    models = [model async for model in client.models.list()]
    assert [m.id for m in models][:4] == ["claude", "fast-local", "vllm-local", "down-local"]
    for model in models:
        assert model.type == "model"
        assert model.display_name == model.id
        assert model.created_at.year >= 2024
    one = await client.models.retrieve("fast-local")
    assert one.id == "fast-local"


# -- count_tokens -------------------------------------------------------------------------------


async def test_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    short = await client.messages.count_tokens(model="fast-local", messages=ASK)
    longer = await client.messages.count_tokens(
        model="claude",
        messages=[{"role": "user", "content": "What is the capital of Peru? " * 40}],
        system="Be terse.",
        tools=[LOOKUP],
    )
    assert 0 < short.input_tokens < longer.input_tokens
    raw = await client.messages.with_raw_response.count_tokens(model="fast-local", messages=ASK)
    assert raw.headers["x-sidecar-token-count"] == "estimate"
    assert raw.headers["x-sidecar-provider"] == "ollama"


# -- errors -----------------------------------------------------------------------------------


async def test_errors_in_anthropics_shape(bridge: Bridge, client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as missing:
        # The SDK will not send a request without max_tokens; its raw post will.
        body = {"model": "claude", "messages": ASK}
        await client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required, expected an integer of at least 1",
        },
    }
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await client.messages.create(model="no-such-model", max_tokens=10, messages=ASK)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    video: Any = [{"type": "video", "url": "x"}]
    with pytest.raises(anthropic.BadRequestError) as bad_block:
        await client.messages.create(
            model="claude",
            max_tokens=10,
            messages=[{"role": "user", "content": video}],
        )
    assert "messages.0.content.0.type" in bad_block.value.message
    async with anthropic.AsyncAnthropic(
        base_url=bridge.root, api_key="sk-wrong", max_retries=0, timeout=10.0
    ) as stranger:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await stranger.messages.create(model="claude", max_tokens=10, messages=ASK)
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    for stream in (False, True):
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await client.messages.create(
                model="down-local", max_tokens=10, messages=ASK, stream=stream
            )
        assert overloaded.value.status_code == 529
        assert isinstance(overloaded.value, anthropic.InternalServerError)
        assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_failure_after_the_first_token_ends_with_an_error_event(
    bridge: Bridge, claude: AnthropicSimulator
) -> None:
    claude.fault = Fault("error_line", after_tokens=3)
    body = {"model": "claude", "max_tokens": 50, "messages": ASK, "stream": True}
    events = await _raw_events(bridge.root, body)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-1] == "error"
    assert "message_stop" not in names
    text = "".join(p["delta"]["text"] for name, p in events if name == "content_block_delta")
    assert text == "tok0 tok1 tok2 "
    error = events[-1][1]["error"]
    assert error["type"] == "overloaded_error"
    assert "overloaded_error" in error["message"]


async def test_rate_limit(client: anthropic.AsyncAnthropic, ollama: OllamaSimulator) -> None:
    ollama.fault = Fault("http_429", retry_after=2.5)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="fast-local", max_tokens=10, messages=ASK)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.response.headers["retry-after"] == "3"


async def test_oversized_body_is_413_in_anthropics_shape(
    claude: AnthropicSimulator, ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    limit = 64 * 1024
    config = _config(claude, ollama, openai_sim)
    huge = {
        "model": "fast-local",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x" * limit}],
    }
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    async with (
        running_bridge(config, "in-process", max_body_bytes=limit) as bridge,
        aiohttp.ClientSession() as session,
        session.post(f"{bridge.root}/v1/messages", data=orjson.dumps(huge), headers=headers) as r,
    ):
        assert r.status == 413
        body = await r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "request_too_large"
    assert "at most 65,536 bytes" in body["error"]["message"]


async def test_spend_cap_is_anthropics_spend_limit(openai_sim: OpenAISimulator) -> None:
    price = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}
    priced = {
        "api_base": openai_sim.base_url,
        "api_key": UPSTREAM_KEY,
        "model_info": {"locality": "cloud", **price},
    }
    config = make_config(
        [("cloud", "openai/gpt-4o-mini", priced)],
        general_settings={"master_key": KEY, "max_budget": 0.0000001, "budget_duration": "30d"},
    )
    async with (
        running_bridge(config, "in-process") as bridge,
        anthropic.AsyncAnthropic(base_url=bridge.root, api_key=KEY, max_retries=0) as sdk,
    ):
        with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as capped:
            await sdk.messages.create(model="cloud", max_tokens=100, messages=ASK)
    assert capped.value.status_code == 429
    assert capped.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert capped.value.response.headers["x-should-retry"] == "false"
    assert openai_sim.stats.requests == 0


async def test_sensitive_request_reaches_no_cloud(
    client: anthropic.AsyncAnthropic, claude: AnthropicSimulator, ollama: OllamaSimulator
) -> None:
    before = claude.stats.requests
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(
            model="claude",
            max_tokens=50,
            messages=[{"role": "user", "content": SSN_PROMPT}],
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    local = await client.messages.create(
        model="fast-local",
        max_tokens=50,
        system=[{"type": "text", "text": SSN_PROMPT}],
        messages=ASK,
    )
    assert local.content[0].type == "text"
    assert claude.stats.requests == before
    assert ollama.stats.requests >= 1
