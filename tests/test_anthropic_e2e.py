"""End to end over real sockets: gRPC client (and the HTTP bridge) -> sidecar -> simulated
Anthropic Messages API: text, streaming, usage with cached tokens, every stop reason, tool
calls single and parallel, a two-turn tool loop, and overloads feeding the fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import openai
import orjson
import pytest

from sidecar.providers import ProviderRegistry
from sidecar.providers.base import ProbeStatus
from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import AnthropicSimulator, Fault, OllamaSimulator, profile_by_name
from sidecar.simulate.profile import answer_text
from tests.bridge_harness import running_bridge
from tests.harness import (
    Sidecar,
    chat_request,
    make_config,
    merged_calls,
    running_sidecar,
    stream_chunks,
)

KEY = "sk-ant-upstream"
MASTER = "sk-master-claude"
EXPECTED = answer_text(20)
LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a city up.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"days": {"type": "integer"}},
            "required": ["days"],
        },
    },
}


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicSimulator]:
    async with AnthropicSimulator(profile=profile_by_name("instant"), api_key=KEY) as sim:
        yield sim


def _config(
    claude: AnthropicSimulator, ollama: OllamaSimulator | None = None, master: str | None = None
) -> Any:
    """gRPC tests run without a master key (auth has its own tests); the bridge's with one."""
    entries: list[tuple[str, str, Mapping[str, Any]]] = [
        (
            "cloud-reasoning",
            "claude-sonnet-4-20250514",
            {"api_base": claude.base_url, "api_key": KEY, "max_tokens": 512},
        ),
    ]
    sections: dict[str, Any] = {
        "timeouts": {"first_token": 5, "idle": 5, "total": 20},
    }
    if master is not None:
        sections["general_settings"] = {"master_key": master}
    if ollama is not None:
        entries.append(("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}))
        sections["litellm_settings"] = {"fallbacks": [{"cloud-reasoning": ["fast-local"]}]}
    return make_config(entries, **sections)


@pytest.fixture
async def sidecar(claude: AnthropicSimulator) -> AsyncIterator[Sidecar]:
    async with running_sidecar(_config(claude)) as running:
        yield running


async def test_unary_and_stream_text_with_usage(
    sidecar: Sidecar, claude: AnthropicSimulator
) -> None:
    request = chat_request("cloud-reasoning")
    request.messages.insert(0, pb.Message(role="system", content="Be terse."))
    response = await sidecar.stub.Chat(request, timeout=10)
    assert response.content == EXPECTED
    assert response.finish_reason == "stop"
    assert response.route.provider == "anthropic"
    assert response.route.upstream_model == "claude-sonnet-4-20250514"
    assert response.usage.completion_tokens == 20
    assert response.usage.prompt_tokens_known
    body = claude.stats.bodies[-1]
    assert body["system"] == "Be terse."
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["max_tokens"] == 512  # the deployment's cap: the API requires one

    chunks = await stream_chunks(sidecar, chat_request("cloud-reasoning"))
    assert "".join(c.delta for c in chunks) == EXPECTED
    assert chunks[0].route.provider == "anthropic"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == 20


async def test_generation_params_reach_the_messages_api(
    sidecar: Sidecar, claude: AnthropicSimulator
) -> None:
    request = chat_request(
        "cloud-reasoning",
        params=pb.GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, stop=["tok30"]),
        extra_json=orjson.dumps({"top_k": 5, "frequency_penalty": 0.1}).decode(),
    )
    response = await sidecar.stub.Chat(request, timeout=10)
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == 7
    body = claude.stats.bodies[-1]
    assert body["max_tokens"] == 7
    assert body["temperature"] == 0.5
    assert body["top_p"] == pytest.approx(0.9)
    assert body["stop_sequences"] == ["tok30"]
    assert body["top_k"] == 5
    assert "frequency_penalty" not in body  # OpenAI-only: the API would refuse it


@pytest.mark.parametrize(
    ("text", "finish"),
    [
        ("Say hello", "stop"),
        ("Say hello [sim:stop_reason=refusal]", "content_filter"),
        ("Say hello [sim:stop_reason=pause_turn]", "pause_turn"),
        ("Say hello [sim:stop_reason=model_context_window_exceeded]", "length"),
        ("Say hello [sim:stop_reason=brand_new_reason]", "brand_new_reason"),
    ],
)
async def test_stop_reasons_are_mapped_explicitly(sidecar: Sidecar, text: str, finish: str) -> None:
    chunks = await stream_chunks(sidecar, chat_request("cloud-reasoning", text))
    assert [c.finish_reason for c in chunks if c.finish_reason] == [finish]


async def test_stop_sequence_is_stop(sidecar: Sidecar) -> None:
    request = chat_request("cloud-reasoning", params=pb.GenerationParams(stop=["tok4"]))
    response = await sidecar.stub.Chat(request, timeout=10)
    assert response.finish_reason == "stop"
    assert response.content == answer_text(4)


async def test_cached_tokens_are_reported_once(
    sidecar: Sidecar, claude: AnthropicSimulator
) -> None:
    system = "You are a geographer. " * 40
    extra = orjson.dumps({"cache_control": {"type": "ephemeral"}}).decode()

    async def ask() -> pb.ChatChunk:
        request = chat_request("cloud-reasoning", extra_json=extra)
        request.messages.insert(0, pb.Message(role="system", content=system))
        chunks = await stream_chunks(sidecar, request)
        return chunks[-1]

    first, second = await ask(), await ask()
    assert claude.stats.bodies[-1]["cache_control"] == {"type": "ephemeral"}
    assert first.usage.cache_write_tokens > 0
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    # prompt_tokens is the whole prompt, cached part included, the same both times.
    assert first.usage.prompt_tokens == second.usage.prompt_tokens
    assert second.usage.prompt_tokens > second.usage.cached_tokens


async def test_single_and_parallel_tool_calls(sidecar: Sidecar, claude: AnthropicSimulator) -> None:
    one = chat_request(
        "cloud-reasoning", "Look Lima up.", extra_json=orjson.dumps({"tools": [LOOKUP]}).decode()
    )
    chunks = await stream_chunks(sidecar, one)
    [call] = merged_calls(chunks)
    assert call["name"] == "lookup"
    assert call["id"].startswith("toolu_")
    assert isinstance(orjson.loads(call["arguments"])["city"], str)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    sent = claude.stats.bodies[-1]["tools"]
    assert sent == [
        {
            "name": "lookup",
            "input_schema": LOOKUP["function"]["parameters"],
            "description": "Look a city up.",
        }
    ]

    both = chat_request(
        "cloud-reasoning",
        "Use lookup and weather for Lima.",
        extra_json=orjson.dumps({"tools": [LOOKUP, WEATHER]}).decode(),
    )
    calls = merged_calls(await stream_chunks(sidecar, both))
    assert [c["name"] for c in calls] == ["lookup", "weather"]
    assert len({c["id"] for c in calls}) == 2
    assert isinstance(orjson.loads(calls[1]["arguments"])["days"], int)

    unary = await sidecar.stub.Chat(both, timeout=10)
    assert [c.name for c in unary.tool_calls] == ["lookup", "weather"]
    assert [c.index for c in unary.tool_calls] == [0, 1]


async def test_two_turn_tool_loop(sidecar: Sidecar, claude: AnthropicSimulator) -> None:
    tools = orjson.dumps({"tools": [LOOKUP, WEATHER]}).decode()
    first = await sidecar.stub.Chat(
        chat_request("cloud-reasoning", "Use lookup and weather for Lima.", extra_json=tools),
        timeout=10,
    )
    request = chat_request("cloud-reasoning", "Use lookup and weather for Lima.", extra_json=tools)
    request.messages.append(pb.Message(role="assistant", tool_calls=first.tool_calls))
    for call in first.tool_calls:
        request.messages.append(pb.Message(role="tool", tool_call_id=call.id, content="ok"))
    second = await sidecar.stub.Chat(request, timeout=10)
    assert second.finish_reason == "stop"
    assert second.content == EXPECTED
    turns = claude.stats.bodies[-1]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["id"] for b in turns[1]["content"]] == [c.id for c in first.tool_calls]
    assert turns[1]["content"][0]["input"] == orjson.loads(first.tool_calls[0].arguments)
    # Both results share the one user turn that answers the parallel calls.
    assert [b["tool_use_id"] for b in turns[2]["content"]] == [c.id for c in first.tool_calls]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault("http_529"), id="529-overloaded"),
        pytest.param(Fault("error_line"), id="error-event-before-first-token"),
    ],
)
async def test_overloads_fail_over(
    claude: AnthropicSimulator, ollama: OllamaSimulator, fault: Fault
) -> None:
    claude.fault = fault
    async with running_sidecar(_config(claude, ollama)) as sidecar:
        chunks = await stream_chunks(sidecar, chat_request("cloud-reasoning"))
    assert chunks[0].route.deployment == "fast-local/0"
    assert "".join(c.delta for c in chunks) == EXPECTED
    assert claude.stats.requests == 1


async def test_overload_without_fallback_is_unavailable(
    sidecar: Sidecar, claude: AnthropicSimulator
) -> None:
    claude.fault = Fault("http_529")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(chat_request("cloud-reasoning"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cloud-reasoning/0" in (err.value.details() or "")
    assert "529" in (err.value.details() or "")


async def test_error_event_after_tokens_ends_the_stream(
    sidecar: Sidecar, claude: AnthropicSimulator
) -> None:
    claude.fault = Fault("error_line", after_tokens=3)
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in sidecar.stub.StreamChat(chat_request("cloud-reasoning"), timeout=10):
            received.append(chunk.delta)
    assert "".join(received) == answer_text(3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded_error" in (err.value.details() or "")


@pytest.mark.parametrize("mode", ["in-process", "remote"])
async def test_bridge_reports_anthropic_answers_openai_style(
    claude: AnthropicSimulator, mode: str
) -> None:
    async with (
        running_bridge(_config(claude, master=MASTER), mode) as bridge,
        bridge.client(api_key=MASTER) as client,
    ):
        stream = await client.chat.completions.create(
            model="cloud-reasoning",
            messages=[{"role": "user", "content": "Use lookup and weather for Lima."}],
            tools=[LOOKUP, WEATHER],
            stream=True,
            stream_options={"include_usage": True},
        )
        calls: dict[int, dict[str, str]] = {}
        finish = []
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    if call.function and call.function.arguments:
                        entry["arguments"] += call.function.arguments
        assert finish == ["tool_calls"]
        assert [calls[i]["name"] for i in sorted(calls)] == ["lookup", "weather"]
        assert isinstance(orjson.loads(calls[1]["arguments"])["days"], int)

        cached: Any = {"type": "ephemeral"}
        system: Any = {"role": "system", "content": "You are a geographer. " * 40}
        user: Any = {"role": "user", "content": "Say hello"}
        for _ in range(2):
            answer = await client.chat.completions.create(
                model="cloud-reasoning",
                messages=[system, user],
                extra_body={"cache_control": cached},
            )
        assert answer.choices[0].message.content == EXPECTED
        assert answer.usage is not None
        assert answer.usage.prompt_tokens_details is not None
        assert answer.usage.prompt_tokens_details.cached_tokens
        assert answer.usage.prompt_tokens > answer.usage.prompt_tokens_details.cached_tokens


async def test_thinking_tool_loop_sends_signed_blocks_back_unchanged(
    sidecar: Sidecar, claude: AnthropicSimulator
) -> None:
    extra = orjson.dumps(
        {"tools": [LOOKUP], "thinking": {"type": "enabled", "budget_tokens": 1024}}
    ).decode()
    ask = chat_request("cloud-reasoning", "Look Lima up.", extra_json=extra)
    chunks = await stream_chunks(sidecar, ask)
    reasoning = "".join(c.reasoning for c in chunks)
    blocks = [b for c in chunks for b in c.thinking]
    assert reasoning
    assert [b.thinking for b in blocks] == [reasoning]
    assert blocks[0].signature == claude.sign(reasoning)
    [call] = merged_calls(chunks)
    tool_calls = [pb.ToolCall(id=call["id"], name=call["name"], arguments=call["arguments"])]

    def follow_up(thinking: list[pb.ThinkingBlock]) -> pb.ChatRequest:
        request = chat_request("cloud-reasoning", "Look Lima up.", extra_json=extra)
        request.messages.append(
            pb.Message(role="assistant", tool_calls=tool_calls, thinking=thinking)
        )
        request.messages.append(pb.Message(role="tool", tool_call_id=call["id"], content="9M"))
        return request

    answer = await sidecar.stub.Chat(follow_up(blocks), timeout=10)
    assert answer.finish_reason == "stop"
    assert answer.content == EXPECTED
    assert [b.signature for b in answer.thinking] == [claude.sign(answer.reasoning)]
    sent = claude.stats.bodies[-1]["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": reasoning, "signature": blocks[0].signature}
    assert sent[1]["type"] == "tool_use"

    # The simulator, like the API, refuses a loop whose thinking was lost or altered.
    altered = [pb.ThinkingBlock(thinking=reasoning + " ", signature=blocks[0].signature)]
    for thinking in ([], altered):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Chat(follow_up(thinking), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "thinking" in (err.value.details() or "")


@pytest.mark.parametrize("mode", ["in-process", "remote"])
async def test_bridge_thinking_round_trip(claude: AnthropicSimulator, mode: str) -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    ask: Any = [{"role": "user", "content": "Look Lima up."}]
    async with (
        running_bridge(_config(claude, master=MASTER), mode) as bridge,
        bridge.client(api_key=MASTER) as client,
    ):
        stream = await client.chat.completions.create(
            model="cloud-reasoning", messages=ask, tools=[LOOKUP], stream=True, extra_body=thinking
        )
        reasoning = ""
        blocks: list[Any] = []
        calls: dict[int, dict[str, str]] = {}
        async for chunk in stream:
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                reasoning += extra.get("reasoning_content") or ""
                blocks += extra.get("thinking_blocks") or []
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, {"id": "", "args": ""})
                    entry["id"] = entry["id"] or call.id or ""
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    if call.function and call.function.arguments:
                        entry["args"] += call.function.arguments
        assert blocks == [
            {"type": "thinking", "thinking": reasoning, "signature": claude.sign(reasoning)}
        ]
        made = calls[0]
        turn: Any = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": made["id"],
                    "type": "function",
                    "function": {"name": made["name"], "arguments": made["args"]},
                }
            ],
            "thinking_blocks": blocks,
        }
        result: Any = {"role": "tool", "tool_call_id": made["id"], "content": "9M"}
        forgotten: Any = {**turn, "thinking_blocks": []}
        answer = await client.chat.completions.create(
            model="cloud-reasoning",
            messages=[*ask, turn, result],
            tools=[LOOKUP],
            extra_body=thinking,
        )
        message = answer.choices[0].message
        assert message.content == EXPECTED
        extra = message.model_extra or {}
        assert extra["reasoning_content"]
        assert extra["thinking_blocks"][0]["signature"] == claude.sign(extra["reasoning_content"])
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="cloud-reasoning",
                messages=[*ask, forgotten, result],
                tools=[LOOKUP],
                extra_body=thinking,
            )


async def test_probe_lists_models_without_spending_tokens(claude: AnthropicSimulator) -> None:
    deployment = _config(claude).groups["cloud-reasoning"].deployments[0]
    registry = ProviderRegistry()
    try:
        ready = await registry.probe(deployment)
        await claude.set_fault(Fault("refuse"))
        down = await registry.probe(deployment)
    finally:
        await registry.aclose()
    assert ready is not None
    assert ready.status is ProbeStatus.READY
    assert down is not None
    assert down.status is ProbeStatus.FAILED
    assert claude.stats.requests == 0  # /v1/models is not a chat: no tokens spent
