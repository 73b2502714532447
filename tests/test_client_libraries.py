"""The client libraries people use, against `make run`'s configuration and stand-ins.

The OpenAI SDK's structured-output `parse` helper, and LangChain's `ChatOpenAI` with
`with_structured_output` in its three modes and a `bind_tools` loop that ends with a text
answer, each through the HTTP bridge to simulated Ollama (local aliases) and simulated
OpenAI (cloud aliases).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import openai
import orjson
import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field, SecretStr

from tests.demo import MASTER_KEY, Demo, running_demo

# A simulated Ollama and a simulated OpenAI behind the bridge; auto routes among them.
ALIASES = ["fast-local", "cloud-fast"]


class Forecast(BaseModel):
    """A weather forecast for one city."""

    city: str
    days: int = Field(ge=1, le=7)
    unit: Literal["celsius", "fahrenheit"]
    highs: list[float]
    note: str | None


@tool
def get_weather(city: str, days: int) -> str:
    """Look up the weather forecast for a city, `days` days ahead."""
    return f"{city}: sunny for {days} days"


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    async with running_demo() as running:
        yield running


def chat_model(demo: Demo, alias: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=alias,
        base_url=demo.base_url,
        api_key=SecretStr(MASTER_KEY),
        max_retries=0,
        timeout=15,
    )


@pytest.mark.parametrize("alias", [*ALIASES, "auto"])
async def test_openai_sdk_parse_helper(demo: Demo, alias: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=demo.base_url, api_key=MASTER_KEY, max_retries=0, timeout=15
    ) as client:
        completion = await client.chat.completions.parse(
            model=alias,
            messages=[{"role": "user", "content": "Forecast for Lima, please."}],
            response_format=Forecast,
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Forecast)
        assert 1 <= parsed.days <= 7


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
async def test_langchain_with_structured_output(demo: Demo, alias: str, method: str) -> None:
    structured = chat_model(demo, alias).with_structured_output(Forecast, method=method)  # type: ignore[arg-type]
    messages: list[BaseMessage] = [HumanMessage("Forecast for Lima, please.")]
    if method == "json_mode":
        # JSON mode carries no schema: the prompt says what the object looks like.
        schema = orjson.dumps(Forecast.model_json_schema()).decode()
        messages.insert(0, SystemMessage(f"Answer with a JSON object following {schema}"))
    result: Any = await structured.ainvoke(messages)
    assert isinstance(result, Forecast)
    assert result.unit in ("celsius", "fahrenheit")


@pytest.mark.parametrize("alias", ALIASES)
async def test_langchain_tool_loop_ends_with_a_text_answer(demo: Demo, alias: str) -> None:
    model = chat_model(demo, alias).bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("Use get_weather: what is it like in Lima?")]
    calls = 0
    for _ in range(4):  # a loop that would run on forever is a failure, not a hang
        reply = await model.ainvoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            calls += 1
            assert call["name"] == "get_weather"
            output = get_weather.invoke(call["args"])  # the schema's arguments, well typed
            messages.append(ToolMessage(output, tool_call_id=call["id"]))
    else:
        pytest.fail("the model kept calling tools")
    assert calls == 1
    assert isinstance(reply.content, str)
    assert reply.content.strip()


async def test_model_pickers_see_auto(demo: Demo) -> None:
    async with openai.AsyncOpenAI(
        base_url=demo.base_url, api_key=MASTER_KEY, max_retries=0, timeout=15
    ) as client:
        listed = [model async for model in client.models.list()]
        assert [m.id for m in listed][-1] == "auto"
        auto = await client.models.retrieve("auto")
        extra = auto.model_extra or {}
        assert extra["locality"] == "mixed"
        assert set(extra["routes_to"]) == {
            "cloud-strong",
            "code-local",
            "strong-local",
            "fast-local",
        }
        assert extra["deployments"] == 0
