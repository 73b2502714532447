"""The Gemini simulator speaks the Gemini API: Google's `google-genai` client parses
everything it sends, streamed and not, including thought parts, parallel function calls
with their thought signature, cumulative usage with cached and thinking tokens, finish
reasons and its error shapes (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, a mid-stream error)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from sidecar.simulate import Fault, GeminiSimulator, SimProfile
from sidecar.simulate.profile import answer_text

# google-genai subclasses aiohttp's ClientSession, which aiohttp warns about; the client
# works all the same.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 5
FLASH = "gemini-2.5-flash"
KEY = "AIza-sim-key"
LOOKUP = types.FunctionDeclaration(
    name="lookup",
    description="Look a city up.",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING)},
        required=["city"],
    ),
)
WEATHER = types.FunctionDeclaration(
    name="weather",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"days": types.Schema(type=types.Type.INTEGER, minimum=1)},
        required=["days"],
    ),
)
TOOLS: list[Any] = [types.Tool(function_declarations=[LOOKUP, WEATHER])]


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimProfile(answer_tokens=TOKENS), api_key=KEY) as server:
        yield server


def _client(sim: GeminiSimulator, key: str = KEY) -> genai.Client:
    options = types.HttpOptions(
        base_url=sim.base_url, retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=key, http_options=options)


@pytest.fixture
async def client(sim: GeminiSimulator) -> AsyncIterator[genai.client.AsyncClient]:
    sdk = _client(sim).aio
    yield sdk
    await sdk.aclose()


async def test_unary_text_and_usage(client: genai.client.AsyncClient) -> None:
    reply = await client.models.generate_content(model=FLASH, contents="Capital of Peru?")
    assert reply.text == answer_text(TOKENS)
    assert reply.candidates
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    usage = reply.usage_metadata
    assert usage is not None
    assert usage.candidates_token_count == TOKENS
    assert usage.thoughts_token_count
    assert usage.prompt_token_count
    assert usage.total_token_count == (
        usage.prompt_token_count + TOKENS + usage.thoughts_token_count
    )
    assert reply.model_version == FLASH


async def test_stream_usage_is_cumulative(client: genai.client.AsyncClient) -> None:
    texts, counts = [], []
    async for chunk in await client.models.generate_content_stream(
        model=FLASH, contents="Capital of Peru?"
    ):
        texts.append(chunk.text or "")
        assert chunk.usage_metadata is not None
        counts.append(chunk.usage_metadata.candidates_token_count)
    assert "".join(texts) == answer_text(TOKENS)
    # Each chunk repeats the figure so far; the last one is the answer's.
    assert counts == [1, 2, 3, 4, 5, 5]


async def test_max_tokens_stop_sequences_and_system(
    sim: GeminiSimulator, client: genai.client.AsyncClient
) -> None:
    capped = await client.models.generate_content(
        model=FLASH, contents="hi", config=types.GenerateContentConfig(max_output_tokens=2)
    )
    assert capped.candidates
    assert capped.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert capped.text == answer_text(2)
    stopped = await client.models.generate_content(
        model=FLASH,
        contents="hi",
        config=types.GenerateContentConfig(stop_sequences=["tok3"], system_instruction="Be terse."),
    )
    assert stopped.text == answer_text(3)
    assert stopped.candidates
    assert stopped.candidates[0].finish_reason == types.FinishReason.STOP
    assert sim.stats.bodies[-1]["systemInstruction"]["parts"] == [{"text": "Be terse."}]


async def test_parallel_calls_and_signature_round_trip(client: genai.client.AsyncClient) -> None:
    config = types.GenerateContentConfig(
        tools=TOOLS, thinking_config=types.ThinkingConfig(include_thoughts=True)
    )
    chat = client.chats.create(model=FLASH, config=config)
    first = await chat.send_message("Use lookup and weather for Lima.")
    assert first.candidates
    assert first.candidates[0].content
    parts = first.candidates[0].content.parts or []
    assert parts[0].thought is True
    calls = [p for p in parts if p.function_call]
    assert [p.function_call.name for p in calls if p.function_call] == ["lookup", "weather"]
    # One signature for the batch, on its first call, as Gemini signs parallel calls.
    assert calls[0].thought_signature
    assert calls[1].thought_signature is None
    days: Any = calls[1].function_call.args if calls[1].function_call else {}
    assert days["days"] >= 1
    results: list[Any] = [
        types.Part.from_function_response(name=name, response={"output": "ok"})
        for name in ("lookup", "weather")
    ]
    second = await chat.send_message(results)
    assert second.text == answer_text(TOKENS)


async def test_altered_or_missing_signature_is_refused(client: genai.client.AsyncClient) -> None:
    ask = types.Content(role="user", parts=[types.Part.from_text(text="Look Lima up.")])
    config = types.GenerateContentConfig(tools=TOOLS)
    first = await client.models.generate_content(model=FLASH, contents=[ask], config=config)
    assert first.candidates
    assert first.candidates[0].content
    turn = first.candidates[0].content
    call = (turn.parts or [])[0]
    assert call.function_call
    assert call.thought_signature
    result = types.Content(
        role="user",
        parts=[types.Part.from_function_response(name="lookup", response={"output": "9M"})],
    )
    accepted = await client.models.generate_content(
        model=FLASH, contents=[ask, turn, result], config=config
    )
    assert accepted.text == answer_text(TOKENS)
    altered = call.model_copy(update={"thought_signature": call.thought_signature[:-1] + b"x"})
    lost = call.model_copy(update={"thought_signature": None})
    for part, words in ((altered, "Corrupted thought signature"), (lost, "thought_signature")):
        with pytest.raises(errors.ClientError, match=words) as raised:
            await client.models.generate_content(
                model=FLASH,
                contents=[ask, types.Content(role="model", parts=[part]), result],
                config=config,
            )
        assert raised.value.code == 400


async def test_structured_output_and_schema_keywords(client: genai.client.AsyncClient) -> None:
    schema = types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING)},
        required=["city"],
    )
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=schema
    )
    reply = await client.models.generate_content(model=FLASH, contents="A city?", config=config)
    assert isinstance(reply.parsed, dict)
    assert isinstance(reply.parsed["city"], str)


async def test_finish_reasons_and_blocked_prompt(client: genai.client.AsyncClient) -> None:
    safety = await client.models.generate_content(
        model=FLASH, contents="Say hello [sim:finish_reason=SAFETY]"
    )
    assert safety.candidates
    assert safety.candidates[0].finish_reason == types.FinishReason.SAFETY
    blocked = await client.models.generate_content(
        model=FLASH, contents="Say hello [sim:block_reason=PROHIBITED_CONTENT]"
    )
    assert not blocked.candidates
    assert blocked.prompt_feedback is not None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT


async def test_implicit_cache_is_reported(client: genai.client.AsyncClient) -> None:
    config = types.GenerateContentConfig(system_instruction="You are a geographer. " * 40)
    first = await client.models.generate_content(model=FLASH, contents="hi", config=config)
    second = await client.models.generate_content(model=FLASH, contents="hi", config=config)
    assert first.usage_metadata
    assert second.usage_metadata
    assert first.usage_metadata.cached_content_token_count is None
    cached = second.usage_metadata.cached_content_token_count
    assert cached
    assert second.usage_metadata.prompt_token_count == first.usage_metadata.prompt_token_count
    assert (second.usage_metadata.prompt_token_count or 0) > cached


@pytest.mark.parametrize(
    ("fault", "status", "name"),
    [
        (Fault("http_429"), 429, "RESOURCE_EXHAUSTED"),
        (Fault("http_503"), 503, "UNAVAILABLE"),
        (Fault("http_500"), 500, "INTERNAL"),
    ],
)
async def test_error_statuses(
    sim: GeminiSimulator, client: genai.client.AsyncClient, fault: Fault, status: int, name: str
) -> None:
    sim.fault = fault
    with pytest.raises(errors.APIError) as raised:
        await client.models.generate_content(model=FLASH, contents="hi")
    assert raised.value.code == status
    assert raised.value.status == name
    assert isinstance(raised.value, errors.ClientError if status < 500 else errors.ServerError)


async def test_mid_stream_error(sim: GeminiSimulator, client: genai.client.AsyncClient) -> None:
    sim.fault = Fault("error_line", after_tokens=2)
    texts: list[str] = []
    with pytest.raises(errors.APIError) as raised:
        async for chunk in await client.models.generate_content_stream(model=FLASH, contents="hi"):
            texts.append(chunk.text or "")
    assert texts == ["tok0 ", "tok1 "]
    assert raised.value.code == 503


async def test_wrong_key_and_unknown_schema_keyword(sim: GeminiSimulator) -> None:
    wrong = _client(sim, "wrong").aio
    with pytest.raises(errors.ClientError) as raised:
        await wrong.models.generate_content(model=FLASH, contents="hi")
    await wrong.aclose()
    assert raised.value.code == 400
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "f",
                        "parameters": {"type": "object", "additionalProperties": False},
                    }
                ]
            }
        ],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.base_url}/v1beta/models/{FLASH}:generateContent",
            json=body,
            headers={"x-goog-api-key": KEY},
        ) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "additionalProperties" in error["message"]


async def test_models_list(sim: GeminiSimulator, client: genai.client.AsyncClient) -> None:
    await client.models.generate_content(model=FLASH, contents="hi")
    names = [m.name async for m in await client.models.list()]
    assert names == [f"models/{FLASH}"]


async def test_simulate_gemini_command_serves_the_sdk() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "simulate",
        "gemini",
        "--port",
        "0",
        "--answer-tokens",
        "3",
        "--api-key",
        KEY,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"on (http://\S+)", line)
        assert match, line
        options = types.HttpOptions(
            base_url=match.group(1), retry_options=types.HttpRetryOptions(attempts=1)
        )
        sdk = genai.Client(api_key=KEY, http_options=options).aio
        reply = await sdk.models.generate_content(model=FLASH, contents="hi")
        await sdk.aclose()
        assert reply.text == answer_text(3)
    finally:
        process.terminate()
        await process.wait()
