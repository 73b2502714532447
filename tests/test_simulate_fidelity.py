"""The simulators speak the real protocols: the official `ollama` and `openai` clients parse
everything they send, and the raw frames match the streaming formats of Ollama's API
documentation (NDJSON chat chunks) and OpenAI's API reference (chat.completion.chunk SSE)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import ollama
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from sidecar.simulate import (
    OllamaSimulator,
    OpenAISimulator,
    SimProfile,
    answer_text,
    presets,
    profile_by_name,
)
from sidecar.simulate.profile import Pacing, profile_from_json

TOKENS = 5
MODEL = "llama3.1:8b"
GPT = "gpt-4o-mini"
USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of Peru? Answer in one word."}
]
TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a city up.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def ollama_sim() -> AsyncIterator[OllamaSimulator]:
    profile = SimProfile(answer_tokens=TOKENS, seed=1)
    async with OllamaSimulator(profile, models=[MODEL], context_length=4096) as sim:
        yield sim


@asynccontextmanager
async def open_ollama(url: str) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=url)
    try:
        yield client
    finally:
        # ollama's close() carries no annotations, and its AsyncClient has no __aenter__.
        await cast(Any, client).close()


@pytest.fixture
async def ollama_client(ollama_sim: OllamaSimulator) -> AsyncIterator[ollama.AsyncClient]:
    async with open_ollama(ollama_sim.base_url) as client:
        yield client


@pytest.fixture
async def openai_sim() -> AsyncIterator[OpenAISimulator]:
    async with OpenAISimulator(SimProfile(answer_tokens=TOKENS), api_key="sk-sim") as sim:
        yield sim


@pytest.fixture
async def openai_client(openai_sim: OpenAISimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=openai_sim.base_url, api_key="sk-sim", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tokens(count: int) -> list[str]:
    return [f"tok{i} " for i in range(count)]


# ----- profiles -------------------------------------------------------------------------------


def test_presets_and_lookup() -> None:
    assert set(presets()) == {
        "instant",
        "local-8b",
        "local-70b",
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet",
        "gemini-flash",
    }
    assert profile_by_name("instant") == SimProfile()
    assert profile_by_name("local-8b").tokens_per_second == (80.0, 120.0)
    with pytest.raises(ValueError, match="known profiles: instant, local-8b"):
        profile_by_name("local-405b")


def test_profile_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="ttft"):
        SimProfile(ttft=(0.2, 0.1))
    with pytest.raises(ValueError, match="tokens_per_second"):
        SimProfile(tokens_per_second=(0.0, 10.0))
    with pytest.raises(ValueError, match="answer_tokens"):
        SimProfile(answer_tokens=-1)
    with pytest.raises(ValueError, match=r"profile\.ttft"):
        profile_from_json({"ttft": "fast"})
    with pytest.raises(ValueError, match="unknown field"):
        profile_from_json({"speed": 3})
    assert profile_from_json({"ttft": 0.01, "answer_tokens": 3}) == SimProfile(
        ttft=(0.01, 0.01), answer_tokens=3
    )


def test_pacing_is_seeded_and_within_range() -> None:
    profile = SimProfile(ttft=(0.03, 0.06), tokens_per_second=(80.0, 120.0), seed=7)
    first = [Pacing.draw(profile, random.Random(7)) for _ in range(3)]
    again = [Pacing.draw(profile, random.Random(7)) for _ in range(3)]
    assert first == again
    for pacing in first:
        assert 0.03 <= pacing.ttft <= 0.06
        assert pacing.gap is not None
        assert 1 / 120 <= pacing.gap <= 1 / 80
    assert Pacing.draw(SimProfile(), random.Random()).gap is None


def test_answer_text() -> None:
    assert answer_text(3) == "tok0 tok1 tok2 "


# ----- Ollama through the official client -----------------------------------------------------


async def test_ollama_chat_not_streamed(ollama_client: ollama.AsyncClient) -> None:
    reply = await ollama_client.chat(model=MODEL, messages=USER, stream=False)
    assert reply.message.role == "assistant"
    assert reply.message.content == answer_text(TOKENS)
    assert reply.done is True
    assert reply.done_reason == "stop"
    assert reply.eval_count == TOKENS
    assert reply.prompt_eval_count is not None
    assert reply.prompt_eval_count >= 1
    # Durations are nanosecond counts that clients divide by: present and never zero.
    assert reply.eval_duration


async def test_ollama_chat_streamed(
    ollama_client: ollama.AsyncClient, ollama_sim: OllamaSimulator
) -> None:
    parts = [
        part async for part in await ollama_client.chat(model=MODEL, messages=USER, stream=True)
    ]
    *body, final = parts
    assert [part.message.content for part in body] == tokens(TOKENS)
    assert not any(part.done for part in body)
    assert final.done is True
    assert final.done_reason == "stop"
    assert final.message.content == ""
    assert final.eval_count == TOKENS
    assert final.total_duration
    assert ollama_sim.stats.requests == 1
    assert ollama_sim.stats.completed == 1
    assert ollama_sim.stats.bodies[-1]["messages"] == USER


async def test_ollama_num_predict_caps_the_answer(ollama_client: ollama.AsyncClient) -> None:
    stream = await ollama_client.chat(
        model=MODEL, messages=USER, stream=True, options={"num_predict": 3}
    )
    parts = [part async for part in stream]
    assert "".join(part.message.content or "" for part in parts) == answer_text(3)
    assert parts[-1].done_reason == "length"
    assert parts[-1].eval_count == 3
    reply = await ollama_client.chat(model=MODEL, messages=USER, options={"num_predict": TOKENS})
    assert reply.done_reason == "stop"  # a cap equal to the answer does not cut it


async def test_ollama_tools(ollama_client: ollama.AsyncClient) -> None:
    reply = await ollama_client.chat(model=MODEL, messages=USER, tools=[TOOL])
    assert reply.message.tool_calls is not None
    (call,) = reply.message.tool_calls
    assert call.function.name == "lookup"
    assert isinstance(call.function.arguments["city"], str)  # from the tool's schema
    assert reply.done_reason == "stop"

    parts = [p async for p in await ollama_client.chat(MODEL, USER, tools=[TOOL], stream=True)]
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["lookup"]
    assert parts[-1].done is True


async def test_ollama_list_show_ps(ollama_client: ollama.AsyncClient) -> None:
    listed = await ollama_client.list()
    assert [m.model for m in listed.models] == [MODEL]
    assert listed.models[0].details is not None

    shown = await ollama_client.show(MODEL)
    assert shown.modelinfo is not None
    arch = shown.modelinfo["general.architecture"]
    assert shown.modelinfo[f"{arch}.context_length"] == 131072
    assert shown.parameters is not None
    assert "num_ctx 4096" in shown.parameters

    running = await ollama_client.ps()
    assert [(m.model, m.context_length) for m in running.models] == [(MODEL, 4096)]


async def test_ollama_unknown_model_is_404(ollama_client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await ollama_client.chat(model="nope:1b", messages=USER)
    assert caught.value.status_code == 404
    assert caught.value.error == "model 'nope:1b' not found"


async def test_ollama_accepts_any_model_by_default(http: aiohttp.ClientSession) -> None:
    async with OllamaSimulator() as sim, open_ollama(sim.base_url) as client:
        reply = await client.chat(model="whatever", messages=USER)
        listed = await client.list()
    assert reply.message.content == answer_text(20)
    assert [m.model for m in listed.models] == ["whatever:latest"]


async def test_ollama_raw_frames(ollama_sim: OllamaSimulator, http: aiohttp.ClientSession) -> None:
    url = f"{ollama_sim.base_url}/api/chat"
    async with http.post(url, json={"model": MODEL, "messages": USER}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        raw = await resp.read()
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # every object ends in a newline
    objects = [orjson.loads(line) for line in lines[:-1]]
    assert len(objects) == TOKENS + 1
    for obj in objects[:-1]:
        assert set(obj) == {"model", "created_at", "message", "done"}
        assert obj["message"]["role"] == "assistant"
        assert obj["done"] is False
    final = objects[-1]
    assert final["done"] is True
    assert {"done_reason", "prompt_eval_count", "eval_count", "total_duration"} <= set(final)
    assert all(isinstance(final[k], int) for k in ("total_duration", "eval_duration"))

    body = {"model": MODEL, "messages": USER, "stream": False}
    async with http.post(url, json=body) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["message"]["content"] == answer_text(TOKENS)


async def test_ollama_request_errors(
    ollama_sim: OllamaSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{ollama_sim.base_url}/api/chat"
    async with http.post(url, json={"messages": USER}) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "model is required"}
    async with http.post(url, data=b"{not json") as resp:
        assert resp.status == 400
        assert "error" in await resp.json()


async def test_ollama_empty_messages_load_the_model(
    ollama_sim: OllamaSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{ollama_sim.base_url}/api/chat"
    async with http.post(url, json={"model": MODEL, "messages": []}) as resp:
        assert (await resp.json())["done_reason"] == "load"
    async with http.post(url, json={"model": MODEL, "keep_alive": 0}) as resp:
        assert (await resp.json())["done_reason"] == "unload"


async def test_ollama_liveness_and_version(
    ollama_sim: OllamaSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(ollama_sim.base_url + "/") as resp:
        assert await resp.text() == "Ollama is running"
    async with http.head(ollama_sim.base_url + "/") as resp:
        assert resp.status == 200
    async with http.get(ollama_sim.base_url + "/api/version") as resp:
        assert isinstance((await resp.json())["version"], str)


# ----- OpenAI through the official SDK --------------------------------------------------------


async def test_openai_create_not_streamed(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.chat.completions.create(model=GPT, messages=USER)
    assert reply.object == "chat.completion"
    assert reply.model == GPT
    (choice,) = reply.choices
    assert choice.message.content == answer_text(TOKENS)
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == TOKENS
    assert reply.usage.prompt_tokens >= 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + TOKENS


async def test_openai_stream_with_usage(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model=GPT,
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer_text(TOKENS)
    *_, finish, last = chunks
    assert finish.choices[0].finish_reason == "stop"
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == TOKENS
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_openai_max_tokens_caps_the_answer(openai_client: openai.AsyncOpenAI) -> None:
    create = openai_client.chat.completions.create
    for reply in (
        await create(model=GPT, messages=USER, max_tokens=2),
        await create(model=GPT, messages=USER, max_completion_tokens=2),
    ):
        assert reply.choices[0].message.content == answer_text(2)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 2


async def test_openai_tool_call_streamed(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model=GPT,
        messages=USER,
        tools=[TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                if fragment.function is not None:
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
    assert list(calls) == [0]
    assert calls[0]["name"] == "lookup"
    assert isinstance(orjson.loads(calls[0]["arguments"])["city"], str)
    assert calls[0]["id"].startswith("call_")
    assert finish == "tool_calls"


async def test_openai_tool_call_not_streamed(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.chat.completions.create(
        model=GPT,
        messages=USER,
        tools=[TOOL],
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert isinstance(orjson.loads(call.function.arguments)["city"], str)


async def test_openai_models_list(openai_client: openai.AsyncOpenAI) -> None:
    await openai_client.chat.completions.create(model=GPT, messages=USER)
    models = [model.id async for model in openai_client.models.list()]
    assert models == [GPT]


async def test_openai_raw_frames(openai_sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    url = f"{openai_sim.base_url}/chat/completions"
    headers = {"Authorization": "Bearer sk-sim"}
    for include_usage in (True, False):
        body: dict[str, Any] = {"model": GPT, "messages": USER, "stream": True}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = await resp.read()
        events = raw.split(b"\n\n")
        assert events[-2:] == [b"data: [DONE]", b""]
        payloads = [orjson.loads(event.removeprefix(b"data: ")) for event in events[:-2]]
        assert all(event.startswith(b"data: {") for event in events[:-2])
        assert payloads[-2 if include_usage else -1]["choices"][0]["delta"] == {}
        if include_usage:
            assert all("usage" in p for p in payloads)
            assert payloads[-1]["choices"] == []
        else:
            assert not any("usage" in p for p in payloads)


async def test_openai_request_errors(
    openai_sim: OpenAISimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{openai_sim.base_url}/chat/completions"
    headers = {"Authorization": "Bearer sk-sim"}
    cases: list[tuple[bytes, str | None]] = [
        (b"{not json", None),
        (orjson.dumps({"model": GPT}), "messages"),
        (orjson.dumps({"messages": USER}), None),
        (orjson.dumps({"model": GPT, "messages": USER, "max_tokens": 0}), "max_tokens"),
    ]
    for data, param in cases:
        async with http.post(url, data=data, headers=headers) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param


async def test_openai_unknown_model_when_listed() -> None:
    async with (
        OpenAISimulator(models=[GPT]) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-9", messages=USER)
    assert caught.value.code == "model_not_found"
