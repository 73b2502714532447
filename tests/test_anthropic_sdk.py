"""The Anthropic simulator speaks the Messages API: the official `anthropic` client parses
everything it sends, streamed and not, including thinking blocks, parallel tool calls,
cached-token usage and its error shapes (529 overloaded, a mid-stream error event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.types import MessageParam, ToolParam

from sidecar.simulate import AnthropicSimulator, Fault, SimProfile
from sidecar.simulate.profile import answer_text

TOKENS = 5
CLAUDE = "claude-sonnet-4-20250514"
KEY = "sk-ant-sim"
USER: list[MessageParam] = [{"role": "user", "content": "What is the capital of Peru?"}]
LOOKUP: ToolParam = {
    "name": "lookup",
    "description": "Look a city up.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
WEATHER: ToolParam = {
    "name": "weather",
    "input_schema": {
        "type": "object",
        "properties": {"days": {"type": "integer", "minimum": 1}},
        "required": ["days"],
    },
}


@pytest.fixture
async def sim() -> AsyncIterator[AnthropicSimulator]:
    async with AnthropicSimulator(SimProfile(answer_tokens=TOKENS), api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(sim: AnthropicSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=sim.base_url, api_key=KEY, max_retries=0) as sdk:
        yield sdk


async def test_unary_message(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(model=CLAUDE, max_tokens=100, messages=USER)
    assert message.role == "assistant"
    assert message.model == CLAUDE
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == answer_text(TOKENS)
    assert message.usage.output_tokens == TOKENS
    assert message.usage.input_tokens >= 1


async def test_stream_accumulates_to_the_same_message(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=CLAUDE, max_tokens=100, messages=USER, system="Be terse."
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == [f"tok{i} " for i in range(TOKENS)]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == TOKENS


async def test_max_tokens_and_stop_sequence(client: anthropic.AsyncAnthropic) -> None:
    capped = await client.messages.create(model=CLAUDE, max_tokens=2, messages=USER)
    assert capped.stop_reason == "max_tokens"
    assert capped.usage.output_tokens == 2
    stopped = await client.messages.create(
        model=CLAUDE, max_tokens=100, messages=USER, stop_sequences=["tok3"]
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == "tok3"
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == answer_text(3)


async def test_parallel_tool_calls_stream_as_separate_blocks(
    client: anthropic.AsyncAnthropic,
) -> None:
    ask: list[MessageParam] = [{"role": "user", "content": "Use lookup and weather for Lima."}]
    async with client.messages.stream(
        model=CLAUDE, max_tokens=100, messages=ask, tools=[LOOKUP, WEATHER]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.name for c in calls] == ["lookup", "weather"]
    assert len({c.id for c in calls}) == 2
    lookup_input: Any = calls[0].input
    weather_input: Any = calls[1].input
    assert isinstance(lookup_input["city"], str)
    assert isinstance(weather_input["days"], int)
    assert weather_input["days"] >= 1
    single = await client.messages.create(
        model=CLAUDE,
        max_tokens=100,
        messages=ask,
        tools=[LOOKUP, WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert [b.type for b in single.content] == ["tool_use"]


async def test_thinking_signature_must_come_back_intact(client: anthropic.AsyncAnthropic) -> None:
    ask: list[MessageParam] = [{"role": "user", "content": "Look Lima up."}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    async with client.messages.stream(
        model=CLAUDE, max_tokens=2048, messages=ask, tools=[LOOKUP], thinking=thinking
    ) as stream:
        first = await stream.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    block = first.content[0]
    assert block.type == "thinking"
    assert block.signature
    call = first.content[1]
    assert call.type == "tool_use"
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Lima: 9M people"}],
    }
    echoed: Any = [b.model_dump() for b in first.content]
    second = await client.messages.create(
        model=CLAUDE,
        max_tokens=2048,
        thinking=thinking,
        tools=[LOOKUP],
        messages=[*ask, {"role": "assistant", "content": echoed}, result],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[-1].type == "text"

    tampered = [dict(echoed[0], signature=block.signature[:-4] + "AAAA"), echoed[1]]
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        await client.messages.create(
            model=CLAUDE,
            max_tokens=2048,
            thinking=thinking,
            tools=[LOOKUP],
            messages=[*ask, {"role": "assistant", "content": tampered}, result],
        )
    with pytest.raises(anthropic.BadRequestError, match="thinking"):
        await client.messages.create(
            model=CLAUDE,
            max_tokens=2048,
            thinking=thinking,
            tools=[LOOKUP],
            messages=[*ask, {"role": "assistant", "content": [echoed[1]]}, result],
        )


async def test_cached_prefix_is_written_then_read(client: anthropic.AsyncAnthropic) -> None:
    cached = {"type": "ephemeral"}
    system: Any = [{"type": "text", "text": "You are a geographer. " * 40, "cache_control": cached}]
    first = await client.messages.create(model=CLAUDE, max_tokens=10, system=system, messages=USER)
    second = await client.messages.create(model=CLAUDE, max_tokens=10, system=system, messages=USER)
    written = first.usage.cache_creation_input_tokens
    assert written is not None
    assert written > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    # input_tokens leaves the cached part out, as the API counts it.
    assert second.usage.input_tokens == first.usage.input_tokens


async def test_overloaded_is_529(sim: AnthropicSimulator, client: anthropic.AsyncAnthropic) -> None:
    sim.fault = Fault("http_529")
    with pytest.raises(anthropic.OverloadedError) as raised:
        await client.messages.create(model=CLAUDE, max_tokens=10, messages=USER)
    assert raised.value.status_code == 529
    body: Any = raised.value.body
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_mid_stream_error_event(
    sim: AnthropicSimulator, client: anthropic.AsyncAnthropic
) -> None:
    sim.fault = Fault("error_line", after_tokens=2)
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async with client.messages.stream(model=CLAUDE, max_tokens=10, messages=USER) as stream:
            async for text in stream.text_stream:
                texts.append(text)
    assert texts == ["tok0 ", "tok1 "]


async def test_wrong_key_and_missing_max_tokens(sim: AnthropicSimulator) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=sim.base_url, api_key="wrong", max_retries=0
    ) as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.create(model=CLAUDE, max_tokens=10, messages=USER)
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.base_url}/v1/messages", json={"model": CLAUDE, "messages": USER}, headers=headers
        ) as resp,
    ):
        assert resp.status == 400
        body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


async def test_models_list(sim: AnthropicSimulator, client: anthropic.AsyncAnthropic) -> None:
    await client.messages.create(model=CLAUDE, max_tokens=10, messages=USER)
    page = await client.models.list()
    assert [m.id for m in page.data] == [CLAUDE]
