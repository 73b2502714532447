"""The Responses door driven by the official `openai` SDK (`client.responses`), in both
bridge modes: SDK -> bridge (/v1/responses) -> engine -> the Ollama and OpenAI-compatible
simulators. Stateless: what needs stored responses is refused, clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from sidecar.simulate import OllamaSimulator, OpenAISimulator
from tests.bridge_harness import EXPECTED, MODES, Bridge, running_bridge, standard_config

ALIASES = ("fast-local", "vllm-local", "cloud-fast")
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
