"""The Responses door driven by the official `openai` SDK (`client.responses`), in both
bridge modes: SDK -> bridge (/v1/responses) -> engine -> the Ollama and OpenAI-compatible
simulators. Stateless: what needs stored responses is refused, clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from sidecar.simulate import (
    AnthropicSimulator,
    Fault,
    OllamaSimulator,
    OpenAISimulator,
    profile_by_name,
)
from tests.bridge_harness import EXPECTED, KEY, MODES, Bridge, running_bridge
from tests.harness import UPSTREAM_KEY, make_config

ALIASES = ("fast-local", "vllm-local", "cloud-fast", "claude")
CLAUDE_KEY = "sk-ant-sim"
CLOUD: Any = {"locality": "cloud"}
SSN_PROMPT = "Patient John Doe, SSN 123-45-6789, asks about his results."
LOOKUP: Any = {
    "type": "function",
    "name": "lookup",
    "description": "Look a city up.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicSimulator]:
    async with AnthropicSimulator(profile=profile_by_name("instant"), api_key=CLAUDE_KEY) as sim:
        yield sim


@pytest.fixture(params=MODES)
async def bridge(
    request: pytest.FixtureRequest,
    ollama: OllamaSimulator,
    openai_sim: OpenAISimulator,
    claude: AnthropicSimulator,
) -> AsyncIterator[Bridge]:
    openai_params = {"api_base": openai_sim.base_url, "api_key": UPSTREAM_KEY}
    claude_params = {"api_base": claude.base_url, "api_key": CLAUDE_KEY, "model_info": CLOUD}
    config = make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}),
            ("vllm-local", "openai/qwen2.5", openai_params),
            ("cloud-fast", "openai/gpt-4o-mini", {**openai_params, "model_info": CLOUD}),
            ("claude", "claude-sonnet-4-20250514", claude_params),
        ],
        general_settings={"master_key": KEY},
        timeouts={"first_token": 5, "idle": 5, "total": 20},
    )
    async with running_bridge(config, request.param) as running:
        yield running


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[openai.AsyncOpenAI]:
    async with bridge.client() as sdk:
        yield sdk


@pytest.mark.parametrize("alias", ALIASES)
async def test_whole_response(client: openai.AsyncOpenAI, alias: str) -> None:
    response = await client.responses.create(
        model=alias, input="Say hello", instructions="Be terse.", store=True
    )
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == alias
    assert response.output_text == EXPECTED
    assert [item.type for item in response.output] == ["message"]
    assert response.to_dict()["store"] is False  # accepted, but nothing is kept
    # The SDK builds its objects unchecked; check every required field is there.
    Response.model_validate(response.to_dict())
    assert response.instructions == "Be terse."
    usage = response.usage
    assert usage is not None
    assert usage.output_tokens == 20
    assert usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize("alias", ALIASES)
async def test_streamed_events(client: openai.AsyncOpenAI, alias: str) -> None:
    stream = await client.responses.create(
        model=alias,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
        stream=True,
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == EXPECTED
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == EXPECTED
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == 20
    created = events[0]
    assert created.type == "response.created"
    assert created.response.status == "in_progress"
    assert created.response.usage is None


async def test_stream_helper_accumulates(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="vllm-local", input="Say hello") as stream:
        final = await stream.get_final_response()
    assert final.output_text == EXPECTED


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
async def test_function_tool_loop(client: openai.AsyncOpenAI, alias: str, stream: bool) -> None:
    ask: list[Any] = [{"role": "user", "content": "Look Lima up."}]

    async def turn(items: list[Any]) -> Any:
        if not stream:
            return await client.responses.create(model=alias, input=items, tools=[LOOKUP])
        events = await client.responses.create(
            model=alias, input=items, tools=[LOOKUP], stream=True
        )
        seen = [event async for event in events]
        kinds = {event.type for event in seen}
        last = seen[-1]
        assert last.type == "response.completed"
        if any(item.type == "function_call" for item in last.response.output):
            assert "response.function_call_arguments.delta" in kinds
            assert "response.function_call_arguments.done" in kinds
        return last.response

    first = await turn(ask)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "lookup"
    assert call.call_id
    assert call.id != call.call_id
    assert call.status == "completed"
    assert '"city"' in call.arguments
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Lima: 10M"}
    second = await turn([*ask, call.model_dump(exclude_none=True), result])
    assert second.status == "completed"
    assert second.output_text == EXPECTED


async def test_settings_reach_the_upstream(
    client: openai.AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    text: Any = {"format": {"type": "json_schema", "name": "city", "schema": schema}}
    await client.responses.create(
        model="vllm-local",
        input="Say hello",
        instructions="Be terse.",
        max_output_tokens=50,
        temperature=0.5,
        text=text,
        tools=[LOOKUP],
        tool_choice={"type": "function", "name": "lookup"},
    )
    sent = openai_sim.stats.bodies[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == pytest.approx(0.5)
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema},
    }
    assert sent["tools"][0]["function"]["name"] == "lookup"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


async def test_output_cap_is_incomplete(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="fast-local", input="Say hello", max_output_tokens=3
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


async def test_stateful_requests_are_refused(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as chained:
        await client.responses.create(
            model="fast-local", input="And then?", previous_response_id="resp_123"
        )
    assert chained.value.param == "previous_response_id"
    assert "stateless" in chained.value.message
    with pytest.raises(openai.NotFoundError) as fetched:
        await client.responses.retrieve("resp_123")
    assert "stores no responses" in fetched.value.message
    with pytest.raises(openai.BadRequestError) as hosted:
        await client.responses.create(
            model="fast-local", input="Search", tools=[{"type": "web_search"}]
        )
    assert hosted.value.param == "tools[0].type"
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="no-such-model", input="Say hello")


async def test_failure_after_the_first_token_is_response_failed(
    client: openai.AsyncOpenAI, claude: AnthropicSimulator
) -> None:
    claude.fault = Fault("error_line", after_tokens=3)
    stream = await client.responses.create(model="claude", input="Say hello", stream=True)
    events = [event async for event in stream]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "tok0 tok1 tok2 "
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert "overloaded_error" in failed.response.error.message
    assert "response.completed" not in {event.type for event in events}


async def test_sensitive_request_reaches_no_cloud(
    client: openai.AsyncOpenAI,
    claude: AnthropicSimulator,
    openai_sim: OpenAISimulator,
    ollama: OllamaSimulator,
) -> None:
    before = (claude.stats.requests, openai_sim.stats.requests)
    for alias in ("claude", "cloud-fast"):
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model=alias, input=SSN_PROMPT)
    local = await client.responses.create(
        model="fast-local", input="Say hello", instructions=SSN_PROMPT
    )
    assert local.output_text == EXPECTED
    assert (claude.stats.requests, openai_sim.stats.requests) == before
    assert ollama.stats.requests >= 1
