"""End to end over real sockets: gRPC client (and the HTTP bridge) -> sidecar -> simulated
Gemini API: text, streaming, usage (cumulative, cached, thoughts), every finish reason,
function calls single and parallel, a two-turn tool loop whose thought signature must come
back intact, and 429 / 503 feeding the fallback cascade."""

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
from sidecar.runtime.standins import StandIns
from sidecar.simulate import Fault, GeminiSimulator, OllamaSimulator, profile_by_name
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

KEY = "AIza-upstream-key"
MASTER = "sk-master-gemini"
FLASH = "gemini-2.5-flash"
EXPECTED = answer_text(20)
# The simulator's thinking, as its usage reports it on every answer.
THOUGHTS = len("Let me work out which function answers this.") // 4
LOOKUP: Any = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a city up.",
        "parameters": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"days": {"type": "integer", "exclusiveMinimum": 0}},
            "required": ["days"],
        },
    },
}


@pytest.fixture
async def gemini() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(profile=profile_by_name("instant"), api_key=KEY) as sim:
        yield sim


def _config(
    gemini: GeminiSimulator, ollama: OllamaSimulator | None = None, master: str | None = None
) -> Any:
    """gRPC tests run without a master key (auth has its own tests); the bridge's with one."""
    entries: list[tuple[str, str, Mapping[str, Any]]] = [
        ("cloud-gemini", f"gemini/{FLASH}", {"api_base": gemini.base_url, "api_key": KEY}),
    ]
    sections: dict[str, Any] = {"timeouts": {"first_token": 5, "idle": 5, "total": 20}}
    if master is not None:
        sections["general_settings"] = {"master_key": master}
    if ollama is not None:
        entries.append(("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}))
        sections["litellm_settings"] = {"fallbacks": [{"cloud-gemini": ["fast-local"]}]}
    return make_config(entries, **sections)


@pytest.fixture
async def sidecar(gemini: GeminiSimulator) -> AsyncIterator[Sidecar]:
    async with running_sidecar(_config(gemini)) as running:
        yield running


def _tools(*tools: Any, **extra: Any) -> str:
    return orjson.dumps({"tools": list(tools), **extra}).decode()


async def test_unary_and_stream_text_with_usage(sidecar: Sidecar, gemini: GeminiSimulator) -> None:
    request = chat_request("cloud-gemini")
    request.messages.insert(0, pb.Message(role="system", content="Be terse."))
    response = await sidecar.stub.Chat(request, timeout=10)
    assert response.content == EXPECTED
    assert response.finish_reason == "stop"
    assert response.route.provider == "gemini"
    assert response.route.upstream_model == FLASH
    # Output is the visible answer plus the thinking, both billed as output.
    assert response.usage.completion_tokens == 20 + THOUGHTS
    assert response.usage.prompt_tokens_known
    body = gemini.stats.bodies[-1]
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in body["contents"]] == ["user"]

    # Every chunk of the stream carried the usage so far; summing would count 20 times over.
    chunks = await stream_chunks(sidecar, chat_request("cloud-gemini"))
    assert "".join(c.delta for c in chunks) == EXPECTED
    assert chunks[0].route.provider == "gemini"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    final = chunks[-1].usage
    assert final.completion_tokens == 20 + THOUGHTS
    assert final.prompt_tokens == gemini.stats.prompt_tokens - response.usage.prompt_tokens


async def test_generation_config(sidecar: Sidecar, gemini: GeminiSimulator) -> None:
    request = chat_request(
        "cloud-gemini",
        params=pb.GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, stop=["tok30"]),
        extra_json=orjson.dumps({"top_k": 5, "user": "someone"}).decode(),
    )
    response = await sidecar.stub.Chat(request, timeout=10)
    assert response.finish_reason == "length"
    assert response.content == answer_text(7)
    config = gemini.stats.bodies[-1]["generationConfig"]
    assert config["maxOutputTokens"] == 7
    assert config["temperature"] == 0.5
    assert config["topP"] == pytest.approx(0.9)
    assert config["stopSequences"] == ["tok30"]
    assert config["topK"] == 5
    assert "user" not in gemini.stats.bodies[-1]


async def test_cached_tokens_are_reported_once(sidecar: Sidecar) -> None:
    async def ask() -> pb.ChatChunk:
        request = chat_request("cloud-gemini")
        request.messages.insert(0, pb.Message(role="system", content="You are a geographer. " * 40))
        return (await stream_chunks(sidecar, request))[-1]

    first, second = await ask(), await ask()
    assert not first.usage.HasField("cached_tokens")
    assert second.usage.cached_tokens > 0
    # prompt_tokens is the whole prompt, cached part included, the same both times.
    assert first.usage.prompt_tokens == second.usage.prompt_tokens
    assert second.usage.prompt_tokens > second.usage.cached_tokens


@pytest.mark.parametrize(
    ("text", "finish"),
    [
        ("Say hello", "stop"),
        ("Say hello [sim:finish_reason=MAX_TOKENS]", "length"),
        ("Say hello [sim:finish_reason=SAFETY]", "content_filter"),
        ("Say hello [sim:finish_reason=RECITATION]", "content_filter"),
        ("Say hello [sim:finish_reason=BLOCKLIST]", "content_filter"),
        ("Say hello [sim:finish_reason=PROHIBITED_CONTENT]", "content_filter"),
        ("Say hello [sim:finish_reason=SPII]", "content_filter"),
        ("Say hello [sim:finish_reason=OTHER]", "OTHER"),
        ("Say hello [sim:finish_reason=BRAND_NEW_REASON]", "BRAND_NEW_REASON"),
        ("Say hello [sim:block_reason=SAFETY]", "content_filter"),
    ],
)
async def test_finish_reasons_are_mapped_explicitly(
    sidecar: Sidecar, text: str, finish: str
) -> None:
    chunks = await stream_chunks(sidecar, chat_request("cloud-gemini", text))
    assert [c.finish_reason for c in chunks if c.finish_reason] == [finish]


async def test_malformed_function_call_is_an_error(sidecar: Sidecar) -> None:
    request = chat_request(
        "cloud-gemini",
        "Look Lima up. [sim:finish_reason=MALFORMED_FUNCTION_CALL]",
        extra_json=_tools(LOOKUP),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(request, timeout=10)
    assert "MALFORMED_FUNCTION_CALL" in (err.value.details() or "")
    assert err.value.code() != grpc.StatusCode.OK


async def test_single_and_parallel_tool_calls(sidecar: Sidecar, gemini: GeminiSimulator) -> None:
    chunks = await stream_chunks(
        sidecar, chat_request("cloud-gemini", "Look Lima up.", extra_json=_tools(LOOKUP))
    )
    [call] = merged_calls(chunks)
    assert call["name"] == "lookup"
    assert isinstance(orjson.loads(call["arguments"])["city"], str)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    # The schema went out in Gemini's terms (the simulator refuses the others with a 400).
    [declarations] = gemini.stats.bodies[-1]["tools"]
    assert declarations["functionDeclarations"][0]["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }

    both = chat_request(
        "cloud-gemini", "Use lookup and weather for Lima.", extra_json=_tools(LOOKUP, WEATHER)
    )
    calls = merged_calls(await stream_chunks(sidecar, both))
    assert [c["name"] for c in calls] == ["lookup", "weather"]
    assert len({c["id"] for c in calls}) == 2
    assert orjson.loads(calls[1]["arguments"])["days"] >= 0
    unary = await sidecar.stub.Chat(both, timeout=10)
    assert [c.name for c in unary.tool_calls] == ["lookup", "weather"]
    assert [c.index for c in unary.tool_calls] == [0, 1]
    assert unary.finish_reason == "tool_calls"


async def test_two_turn_tool_loop_with_thought_signature(
    sidecar: Sidecar, gemini: GeminiSimulator
) -> None:
    tools = _tools(LOOKUP, WEATHER)
    ask = "Use lookup and weather for Lima."
    chunks = await stream_chunks(sidecar, chat_request("cloud-gemini", ask, extra_json=tools))
    calls = merged_calls(chunks)
    blocks = [b for c in chunks for b in c.thinking]
    assert len(blocks) == 1
    first_call = {"name": calls[0]["name"], "args": orjson.loads(calls[0]["arguments"])}
    assert blocks[0].signature == gemini.sign(first_call)
    tool_calls = [
        pb.ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"], index=i)
        for i, c in enumerate(calls)
    ]

    def follow_up(thinking: list[pb.ThinkingBlock]) -> pb.ChatRequest:
        request = chat_request("cloud-gemini", ask, extra_json=tools)
        request.messages.append(
            pb.Message(role="assistant", tool_calls=tool_calls, thinking=thinking)
        )
        for call in calls:
            request.messages.append(pb.Message(role="tool", tool_call_id=call["id"], content="ok"))
        return request

    second = await sidecar.stub.Chat(follow_up(blocks), timeout=10)
    assert second.finish_reason == "stop"
    assert second.content == EXPECTED
    contents = gemini.stats.bodies[-1]["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"][0]["thoughtSignature"] == blocks[0].signature
    assert "thoughtSignature" not in contents[1]["parts"][1]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["lookup", "weather"]

    # The simulator, like the API, refuses a loop whose signature was lost or altered.
    altered = [pb.ThinkingBlock(signature=blocks[0].signature[:-4] + "AAA=")]
    for thinking in ([], altered):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Chat(follow_up(thinking), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "thought" in (err.value.details() or "")


async def test_thought_parts_stream_as_reasoning(sidecar: Sidecar) -> None:
    extra = orjson.dumps({"reasoning_effort": "low"}).decode()
    chunks = await stream_chunks(sidecar, chat_request("cloud-gemini", extra_json=extra))
    assert "".join(c.reasoning for c in chunks) == "Let me work out which function answers this."
    assert "".join(c.delta for c in chunks) == EXPECTED


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault("http_429"), id="429-resource-exhausted"),
        pytest.param(Fault("http_503"), id="503-unavailable"),
        pytest.param(Fault("error_line"), id="error-event-before-first-token"),
    ],
)
async def test_overloads_fail_over(
    gemini: GeminiSimulator, ollama: OllamaSimulator, fault: Fault
) -> None:
    gemini.fault = fault
    async with running_sidecar(_config(gemini, ollama)) as sidecar:
        chunks = await stream_chunks(sidecar, chat_request("cloud-gemini"))
    assert chunks[0].route.deployment == "fast-local/0"
    assert "".join(c.delta for c in chunks) == EXPECTED
    assert gemini.stats.requests == 1


@pytest.mark.parametrize(("kind", "status"), [("http_429", "429"), ("http_503", "503")])
async def test_overload_without_fallback(
    sidecar: Sidecar, gemini: GeminiSimulator, kind: Any, status: str
) -> None:
    gemini.fault = Fault(kind)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(chat_request("cloud-gemini"), timeout=10)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
    details = err.value.details() or ""
    assert "cloud-gemini/0" in details
    assert status in details
    assert KEY not in details


async def test_retry_info_is_the_retry_after(sidecar: Sidecar, gemini: GeminiSimulator) -> None:
    # Gemini sends no Retry-After header: the delay is the error's RetryInfo.retryDelay.
    gemini.fault = Fault("http_429", retry_after=7)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(chat_request("cloud-gemini"), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata() or ())["retry-after"] == "7.000"


async def test_error_event_after_tokens_ends_the_stream(
    sidecar: Sidecar, gemini: GeminiSimulator
) -> None:
    gemini.fault = Fault("error_line", after_tokens=3)
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in sidecar.stub.StreamChat(chat_request("cloud-gemini"), timeout=10):
            received.append(chunk.delta)
    assert "".join(received) == answer_text(3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "UNAVAILABLE" in (err.value.details() or "")


@pytest.mark.parametrize("mode", ["in-process", "remote"])
async def test_bridge_gemini_answers_openai_style(gemini: GeminiSimulator, mode: str) -> None:
    ask: Any = [{"role": "user", "content": "Use lookup and weather for Lima."}]
    async with (
        running_bridge(_config(gemini, master=MASTER), mode) as bridge,
        bridge.client(api_key=MASTER) as client,
    ):
        stream = await client.chat.completions.create(
            model="cloud-gemini",
            messages=ask,
            tools=[LOOKUP, WEATHER],
            stream=True,
            stream_options={"include_usage": True},
        )
        calls: dict[int, dict[str, str]] = {}
        blocks: list[Any] = []
        finish = []
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
                blocks += (choice.delta.model_extra or {}).get("thinking_blocks") or []
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
                    entry["id"] = entry["id"] or call.id or ""
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    if call.function and call.function.arguments:
                        entry["args"] += call.function.arguments
        assert finish == ["tool_calls"]
        assert [calls[i]["name"] for i in sorted(calls)] == ["lookup", "weather"]
        assert usage is not None
        assert usage.completion_tokens == 2 + THOUGHTS
        assert len(blocks) == 1
        assert blocks[0]["signature"]

        turn: Any = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[i]["id"],
                    "type": "function",
                    "function": {"name": calls[i]["name"], "arguments": calls[i]["args"]},
                }
                for i in sorted(calls)
            ],
            "thinking_blocks": blocks,
        }
        results: Any = [
            {"role": "tool", "tool_call_id": calls[i]["id"], "content": "ok"} for i in sorted(calls)
        ]
        answer = await client.chat.completions.create(
            model="cloud-gemini", messages=[*ask, turn, *results], tools=[LOOKUP, WEATHER]
        )
        assert answer.choices[0].message.content == EXPECTED
        assert answer.choices[0].finish_reason == "stop"
        # A client that drops the thinking blocks gets Gemini's refusal, as a 400.
        forgotten: Any = {**turn, "thinking_blocks": []}
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="cloud-gemini",
                messages=[*ask, forgotten, *results],
                tools=[LOOKUP, WEATHER],
            )

        system: Any = {"role": "system", "content": "You are a geographer. " * 40}
        hello: Any = {"role": "user", "content": "Say hello"}
        for _ in range(2):
            cached = await client.chat.completions.create(
                model="cloud-gemini", messages=[system, hello]
            )
        assert cached.usage is not None
        assert cached.usage.prompt_tokens_details is not None
        assert cached.usage.prompt_tokens_details.cached_tokens
        assert cached.usage.prompt_tokens > cached.usage.prompt_tokens_details.cached_tokens


async def test_probe_lists_models_without_spending_tokens(gemini: GeminiSimulator) -> None:
    deployment = _config(gemini).groups["cloud-gemini"].deployments[0]
    registry = ProviderRegistry()
    try:
        ready = await registry.probe(deployment)
        await gemini.set_fault(Fault("refuse"))
        down = await registry.probe(deployment)
    finally:
        await registry.aclose()
    assert ready is not None
    assert ready.status is ProbeStatus.READY
    assert down is not None
    assert down.status is ProbeStatus.FAILED
    assert gemini.stats.requests == 0  # /v1beta/models is not a chat: no tokens spent


async def test_make_run_stands_gemini_in_with_the_gemini_simulator() -> None:
    # Google's API with no key: `--simulate auto` stands it in (nothing is sent to Google).
    config = make_config([("cloud-gemini", f"gemini/{FLASH}", {})])
    async with StandIns(config, "auto") as standins:
        [deployment] = standins.config.groups["cloud-gemini"].deployments
        assert deployment.provider.value == "gemini"
        assert deployment.simulated
        async with running_sidecar(standins.config) as sidecar:
            chunks = await stream_chunks(sidecar, chat_request("cloud-gemini", "Look Lima up."))
    assert chunks[0].route.provider == "gemini"
    assert chunks[0].route.upstream_model == FLASH
    assert "".join(c.delta for c in chunks)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
