"""The bridge driven by the official OpenAI SDK (sync and async), in both modes, end to end:
SDK -> bridge -> engine (in-process or over gRPC) -> simulated Ollama / OpenAI upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator, SimProfile, profile_by_name
from tests.bridge_harness import (
    EXPECTED,
    KEY,
    MODES,
    USER,
    Bridge,
    running_bridge,
    standard_config,
)
from tests.harness import make_config, wait_until

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
# Slow enough that a caller can leave in the middle; no test waits for the whole answer.
SLOW = SimProfile(tokens_per_second=(20.0, 20.0), answer_tokens=200)


@pytest.fixture(params=MODES)
async def bridge(
    request: pytest.FixtureRequest, ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> AsyncIterator[Bridge]:
    async with running_bridge(standard_config(ollama, openai_sim), request.param) as running:
        yield running


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[openai.AsyncOpenAI]:
    async with bridge.client() as sdk:
        yield sdk


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "locality"),
    [("fast-local", "local"), ("vllm-local", "local"), ("cloud-fast", "cloud")],
)
async def test_completion_round_trip(client: openai.AsyncOpenAI, alias: str, locality: str) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=alias, messages=USER, extra_headers={"x-request-id": "req-42"}
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id == "chatcmpl-req-42"
    assert completion.model == alias
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == EXPECTED
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 20
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 20
    assert raw.headers["x-sidecar-deployment"] == f"{alias}/0"
    assert raw.headers["x-sidecar-locality"] == locality
    assert raw.headers["x-sidecar-attempts"] == "1"
    assert raw.headers["x-request-id"] == "req-42"


@pytest.mark.parametrize("alias", ["fast-local", "vllm-local"])
async def test_stream_with_usage_is_shaped_like_openai(
    client: openai.AsyncOpenAI, alias: str
) -> None:
    stream = await client.chat.completions.create(
        model=alias, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {alias}
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert not finish.choices[0].delta.content
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    usage = chunks[-1]
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == 20
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_usage_has_no_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="vllm-local", messages=USER, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_sync_client_in_a_thread(bridge: Bridge) -> None:
    def use_sync_client() -> tuple[str | None, str]:
        with bridge.sync_client() as sdk:
            whole = sdk.chat.completions.create(model="fast-local", messages=USER)
            streamed = sdk.chat.completions.create(model="fast-local", messages=USER, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        return whole.choices[0].message.content, text

    whole, streamed = await asyncio.to_thread(use_sync_client)
    assert whole == EXPECTED
    assert streamed == EXPECTED


@pytest.mark.parametrize("alias", ["fast-local", "vllm-local"])
async def test_tools_pass_through_both_ways(
    client: openai.AsyncOpenAI,
    ollama: OllamaSimulator,
    openai_sim: OpenAISimulator,
    alias: str,
) -> None:
    completion = await client.chat.completions.create(
        model=alias, messages=USER, tools=TOOLS, tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert isinstance(orjson.loads(call.function.arguments)["city"], str)
    assert call.id

    stream = await client.chat.completions.create(
        model=alias, messages=USER, tools=TOOLS, stream=True
    )
    chunks: list[ChatCompletionChunk] = [chunk async for chunk in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].index == 0
    assert deltas[0].id
    assert deltas[0].type == "function"
    assert deltas[0].function is not None
    assert deltas[0].function.name == "lookup"
    arguments = "".join((d.function.arguments or "") if d.function else "" for d in deltas)
    assert isinstance(orjson.loads(arguments)["city"], str)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    body = (ollama if alias == "fast-local" else openai_sim).stats.bodies[-1]
    assert body["tools"] == TOOLS


async def test_openai_fields_reach_an_openai_upstream(
    client: openai.AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    completion = await client.chat.completions.create(
        model="vllm-local",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Answer in English."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"city":"Lima"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Lima, Peru"},
        ],
        max_tokens=50,
        max_completion_tokens=3,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        response_format={"type": "json_object"},
        user="user-1",
        parallel_tool_calls=False,
        metadata={"task": "vision", "no_fallback": "true"},
        extra_body={"top_k": 40},
    )
    assert completion.choices[0].finish_reason == "length"
    # json_object: the answer is JSON, here cut after 3 pieces of about a token each.
    assert completion.choices[0].message.content == '{"answer":"t'
    body = openai_sim.stats.bodies[-1]
    assert body["max_tokens"] == 3  # max_completion_tokens wins over max_tokens
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        pytest.approx(0.2),
        pytest.approx(0.9),
        ["\n\n"],
        7,
    )
    assert body["response_format"] == {"type": "json_object"}
    assert body["user"] == "user-1"
    assert body["parallel_tool_calls"] is False
    assert body["top_k"] == 40
    assert "metadata" not in body  # routing hints and tags stay in the sidecar
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["developer", "system", "user", "assistant", "tool"]
    assert body["messages"][1]["content"] == "Answer in English."
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
    ]
    assert body["messages"][3]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"city":"Lima"}',
    }
    assert body["messages"][4]["tool_call_id"] == "call_1"


# -- models -----------------------------------------------------------------------------------


async def test_open_webui_flow_models_then_streamed_chat(client: openai.AsyncOpenAI) -> None:
    # Open WebUI fills its dropdown from GET /v1/models with the key, then streams a chat.
    models = [model async for model in client.models.list()]
    assert [m.id for m in models] == ["fast-local", "vllm-local", "cloud-fast", "gemini", "auto"]
    extra = {m.id: m.model_extra or {} for m in models}
    assert extra["fast-local"]["locality"] == "local"
    assert extra["cloud-fast"]["locality"] == "cloud"
    assert extra["cloud-fast"]["description"] == "cloud answers"
    assert extra["fast-local"]["simulated"] is False
    assert all(m.object == "model" and m.owned_by == "llm-sidecar" for m in models)
    stream = await client.chat.completions.create(model=models[0].id, messages=USER, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == EXPECTED


async def test_retrieve_one_model(client: openai.AsyncOpenAI) -> None:
    model = await client.models.retrieve("cloud-fast")
    assert model.id == "cloud-fast"
    with pytest.raises(openai.NotFoundError) as err:
        await client.models.retrieve("nope")
    assert err.value.code == "model_not_found"


# -- errors -----------------------------------------------------------------------------------


async def test_unknown_model_is_not_found(client: openai.AsyncOpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model="nope", messages=USER, stream=stream)
        assert err.value.code == "model_not_found"
        assert err.value.param == "model"
        assert "fast-local" in err.value.message


async def test_bad_key_is_authentication_error(bridge: Bridge) -> None:
    for key in ("sk-wrong", KEY + "x", KEY[:-1]):
        async with bridge.client(api_key=key) as sdk:
            with pytest.raises(openai.AuthenticationError) as err:
                await sdk.chat.completions.create(model="fast-local", messages=USER)
            assert err.value.code == "invalid_api_key"
            assert KEY not in err.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 5}, "temperature"),  # checked by the engine, behind the bridge
        ({"n": 2}, "n"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ],
)
async def test_invalid_request_is_bad_request_naming_the_field(
    client: openai.AsyncOpenAI, fields: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": "fast-local", "messages": USER, **fields}
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(**body)
    assert err.value.param == param
    assert param in err.value.message


async def test_context_window_exceeded_keeps_its_code(client: openai.AsyncOpenAI) -> None:
    # gpt-4o-mini holds 128K tokens; over gRPC (remote mode) the code rides in a trailer.
    prompt = "lorem ipsum dolor " * 80_000
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model="cloud-fast", messages=[{"role": "user", "content": prompt}]
        )
    assert err.value.code == "context_length_exceeded"
    assert err.value.param == "messages"


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault("http_503"), 503), (Fault("http_500"), 503), (Fault("malformed"), 502)],
)
async def test_upstream_failure_is_server_error(
    client: openai.AsyncOpenAI, ollama: OllamaSimulator, fault: Fault, status: int
) -> None:
    ollama.fault = fault
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model="fast-local", messages=USER, stream=stream)
        assert err.value.status_code == status
        assert "fast-local/0" in err.value.message


async def test_an_upstream_nobody_answers_is_unavailable(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        await client.chat.completions.create(model="gemini", messages=USER)
    assert err.value.status_code == 503


async def test_local_only_never_reaches_the_cloud(
    client: openai.AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    before = openai_sim.stats.requests
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model="cloud-fast", messages=USER, metadata={"local_only": "true"}
        )
    assert "privacy" in err.value.message
    assert openai_sim.stats.requests == before


async def test_failure_mid_stream_ends_with_an_error_event(
    client: openai.AsyncOpenAI, ollama: OllamaSimulator
) -> None:
    ollama.profile = SimProfile(tokens_per_second=(200.0, 200.0), answer_tokens=20)
    ollama.fault = Fault("error_line", after_tokens=3)
    received: list[str] = []
    stream = await client.chat.completions.create(model="fast-local", messages=USER, stream=True)
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "tok0 tok1 tok2 "
    assert "fast-local/0" in err.value.message


@pytest.mark.parametrize("mode", MODES)
async def test_first_token_timeout_is_gateway_timeout(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator, mode: str
) -> None:
    ollama.fault = Fault("hang")
    config = standard_config(ollama, openai_sim, timeouts={"first_token": 0.2})
    async with running_bridge(config, mode) as bridge, bridge.client() as sdk:
        with pytest.raises(openai.InternalServerError) as err:
            await sdk.chat.completions.create(model="fast-local", messages=USER, stream=True)
    assert err.value.status_code == 504
    assert "no first token" in err.value.message
    assert await wait_until(lambda: ollama.stats.disconnects == 1, within=1.0)


async def test_timeout_field_is_the_calls_deadline(bridge: Bridge, ollama: OllamaSimulator) -> None:
    ollama.fault = Fault("hang")
    async with bridge.client() as sdk:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as err:
                await sdk.chat.completions.create(
                    model="fast-local", messages=USER, stream=stream, extra_body={"timeout": 0.2}
                )
            assert err.value.status_code == 504
    assert await wait_until(lambda: ollama.stats.disconnects == 2, within=2.0)
    assert all("timeout" not in body for body in ollama.stats.bodies)


async def test_caller_timeout_closes_the_upstream(bridge: Bridge, ollama: OllamaSimulator) -> None:
    ollama.fault = Fault("hang")
    async with bridge.client(timeout=0.3) as sdk:
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(model="fast-local", messages=USER)
    assert await wait_until(lambda: ollama.stats.disconnects == 1, within=2.0)
    assert await wait_until(lambda: ollama.stats.in_flight == 0, within=1.0)


async def test_caller_leaving_mid_stream_closes_the_upstream(
    client: openai.AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    openai_sim.profile = SLOW
    stream = await client.chat.completions.create(model="vllm-local", messages=USER, stream=True)
    seen = 0
    async for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen == 2:
            break
    await stream.close()
    assert await wait_until(lambda: openai_sim.stats.disconnects == 1, within=2.0)
    assert await wait_until(lambda: openai_sim.stats.in_flight == 0, within=1.0)
    # The bridge is unharmed: the next call works.
    openai_sim.profile = profile_by_name("instant")
    completion = await client.chat.completions.create(model="vllm-local", messages=USER)
    assert completion.choices[0].message.content == EXPECTED


async def test_bad_calls_do_not_disturb_good_ones(client: openai.AsyncOpenAI) -> None:
    async def good() -> str:
        stream = await client.chat.completions.create(
            model="fast-local", messages=USER, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def bad(i: int) -> int:
        try:
            if i % 2:
                await client.chat.completions.create(model="missing", messages=USER)
            else:
                await client.chat.completions.create(
                    model="fast-local", messages=USER, temperature=9
                )
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    results = await asyncio.gather(*(good() for _ in range(10)), *(bad(i) for i in range(10)))
    assert results[:10] == [EXPECTED] * 10
    assert set(results[10:]) == {400, 404}


async def test_no_key_configured_means_open(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
    async with (
        running_bridge(config, "in-process") as bridge,
        bridge.client(api_key="anything") as sdk,
    ):
        completion = await sdk.chat.completions.create(model="fast-local", messages=USER)
    assert completion.choices[0].message.content == EXPECTED


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_upstream_rate_limit_is_429_with_retry_after(
    client: openai.AsyncOpenAI, ollama: OllamaSimulator, stream: bool
) -> None:
    ollama.fault = Fault("http_429", retry_after=2.5)
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(model="fast-local", messages=USER, stream=stream)
    assert err.value.code == "rate_limit_exceeded"
    # Rounded up to whole seconds, the form every HTTP client understands.
    assert err.value.response.headers["retry-after"] == "3"
