"""What the simulators answer: tool calls from the tool's schema, text after a tool result,
JSON valid against the requested schema (checked with `jsonschema`), logprobs refused, and
the same answer for the same seed; through the official `ollama` and `openai` clients."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any, cast

import jsonschema
import ollama
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.simulate import OllamaSimulator, OpenAISimulator, SimProfile, answer_text
from sidecar.simulate.schema import instance, schema_in_text

MODEL = "llama3.1:8b"
GPT = "gpt-4o-mini"
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
]
# The shape of Pydantic's model_json_schema(): $defs, $ref, Optional as anyOf-null, lists.
PERSON: dict[str, Any] = {
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "zip": {"type": "string", "minLength": 5, "maxLength": 5},
            },
            "required": ["street", "zip"],
        },
        "Person": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0, "maximum": 130},
                "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "email": {"type": "string", "format": "email"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "kind": {"enum": ["a", "b"]},
                "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
                "friends": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
                "id": {"type": "string", "format": "uuid"},
                "pair": {
                    "type": "array",
                    "prefixItems": [{"type": "integer"}, {"type": "string"}],
                    "minItems": 2,
                    "maxItems": 2,
                },
                "even": {"type": "integer", "multipleOf": 2, "minimum": 3, "maximum": 9},
            },
            "required": ["name", "age", "tags", "kind", "address"],
        },
    },
    "$ref": "#/$defs/Person",
}
USER: list[Any] = [{"role": "user", "content": "What will the weather be in Lima?"}]


@pytest.fixture
async def ollama_sim() -> AsyncIterator[OllamaSimulator]:
    async with OllamaSimulator(SimProfile(answer_tokens=5), models=[MODEL]) as sim:
        yield sim


@pytest.fixture
async def ollama_client(ollama_sim: OllamaSimulator) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=ollama_sim.base_url)
    try:
        yield client
    finally:
        await cast(Any, client).close()


@pytest.fixture
async def openai_client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        OpenAISimulator(SimProfile(answer_tokens=5)) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0) as client,
    ):
        yield client


# ----- the schema generator -------------------------------------------------------------------


@pytest.mark.parametrize("schema", [WEATHER, PERSON], ids=["weather", "pydantic-person"])
def test_instances_are_valid_against_their_schema(schema: dict[str, Any]) -> None:
    for seed in range(100):
        jsonschema.validate(instance(schema, random.Random(seed)), schema)


def test_instances_are_the_same_for_the_same_seed() -> None:
    assert instance(PERSON, random.Random(3)) == instance(PERSON, random.Random(3))


_SCALARS = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "maxLength": 3},
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": -5, "exclusiveMaximum": 5},
        {"type": "number", "minimum": 0.5, "maximum": 0.75},
        {"type": "boolean"},
        {"type": "null"},
        {"type": ["integer", "null"]},
        {"enum": [1, "two", None]},
        {"const": "fixed"},
    ]
)


def _all_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """allOf over objects that do not both require one property (with types that may
    disagree, which no instance satisfies), else over the first part alone."""
    objects = [p for p in parts if p.get("type") == "object"]
    if not objects:
        return {"allOf": parts[:1]}
    taken: set[str] = set()
    kept = []
    for part in objects:
        properties = {k: v for k, v in part["properties"].items() if k not in taken}
        taken |= properties.keys()
        kept.append({**part, "properties": properties, "required": sorted(properties)})
    return {"allOf": kept}


_SCHEMAS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.builds(
            lambda items, low: {"type": "array", "items": items, "minItems": low},
            inner,
            st.integers(0, 3),
        ),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3).map(
            lambda props: {"type": "object", "properties": props, "required": sorted(props)}
        ),
        st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options}),
        st.lists(inner, min_size=1, max_size=2).map(_all_of),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(schema=_SCHEMAS, seed=st.integers(0, 2**32))
def test_generated_schemas_get_valid_instances(schema: dict[str, Any], seed: int) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
        satisfiable = True
    except jsonschema.SchemaError:
        satisfiable = False
    if satisfiable and not _contradictory(schema):
        jsonschema.validate(instance(schema, random.Random(seed)), schema)


def _contradictory(schema: Any) -> bool:
    """allOf over different scalar types has no instance at all: nothing to check."""
    if not isinstance(schema, dict):
        return False
    parts = schema.get("allOf")
    if isinstance(parts, list) and len({str(p.get("type")) for p in parts}) > 1:
        return True
    children = [*schema.get("properties", {}).values(), *schema.get("anyOf", [])]
    children += [schema["items"]] if "items" in schema else []
    children += parts if isinstance(parts, list) else []
    return any(_contradictory(child) for child in children)


def test_a_schema_written_into_a_prompt_is_found() -> None:
    prompt = f"Answer with JSON matching {orjson.dumps(WEATHER).decode()}. Use {{braces}} freely."
    assert schema_in_text(prompt) == WEATHER
    assert schema_in_text("no schema here {not json}") is None


# ----- tools ----------------------------------------------------------------------------------


async def test_openai_tool_arguments_follow_the_schema(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.chat.completions.create(model=GPT, messages=USER, tools=TOOLS)
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "weather"  # the tool the user's words name
    jsonschema.validate(orjson.loads(call.function.arguments), WEATHER)

    stream = await openai_client.chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "weather"}},
        stream=True,
    )
    fragments = [
        f.function.arguments or ""
        async for chunk in stream
        for choice in chunk.choices
        for f in choice.delta.tool_calls or ()
        if f.function is not None
    ]
    assert len(fragments) > 2  # streamed in pieces, as OpenAI does
    jsonschema.validate(orjson.loads("".join(fragments)), WEATHER)


async def test_openai_answers_in_text_after_a_tool_result(
    openai_client: openai.AsyncOpenAI,
) -> None:
    first = await openai_client.chat.completions.create(model=GPT, messages=USER, tools=TOOLS)
    (call,) = first.choices[0].message.tool_calls or []
    assert call.type == "function"
    history: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"},
    ]
    second = await openai_client.chat.completions.create(model=GPT, messages=history, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == answer_text(5)
    # A forced choice still calls, whatever came before; "none" never does.
    forced = await openai_client.chat.completions.create(
        model=GPT, messages=history, tools=TOOLS, tool_choice="required"
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    never = await openai_client.chat.completions.create(
        model=GPT, messages=USER, tools=TOOLS, tool_choice="none"
    )
    assert never.choices[0].message.content == answer_text(5)


async def test_ollama_tool_arguments_then_text(
    ollama_client: ollama.AsyncClient, ollama_sim: OllamaSimulator
) -> None:
    reply = await ollama_client.chat(model=MODEL, messages=USER, tools=TOOLS)
    (call,) = reply.message.tool_calls or []
    assert call.function.name == "weather"
    # The ollama client keeps only part of each property's schema (no bounds): the
    # arguments follow the schema the server was sent.
    sent = ollama_sim.stats.bodies[-1]["tools"][1]["function"]["parameters"]
    assert set(sent["required"]) == {"city", "days"}
    jsonschema.validate(dict(call.function.arguments), sent)
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": "sunny, 24C", "tool_name": "weather"},
    ]
    parts = [p async for p in await ollama_client.chat(MODEL, history, tools=TOOLS, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == answer_text(5)
    assert not any(p.message.tool_calls for p in parts)


# ----- structured output ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_openai_json_schema_answers_validate(
    openai_client: openai.AsyncOpenAI, stream: bool
) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": False},
    }
    text = await _openai_text(openai_client, response_format, stream)
    jsonschema.validate(orjson.loads(text), PERSON)


async def test_openai_json_object_follows_a_schema_in_the_prompt(
    openai_client: openai.AsyncOpenAI,
) -> None:
    bare = orjson.loads(await _openai_text(openai_client, {"type": "json_object"}, False))
    assert isinstance(bare, dict)
    schema = orjson.dumps(WEATHER).decode()
    asked: list[Any] = [
        {"role": "system", "content": f"Reply in JSON with this schema: {schema}"},
        {"role": "user", "content": "Weather in Lima?"},
    ]
    reply = await openai_client.chat.completions.create(
        model=GPT, messages=asked, response_format={"type": "json_object"}
    )
    jsonschema.validate(orjson.loads(reply.choices[0].message.content or ""), WEATHER)


async def _openai_text(client: openai.AsyncOpenAI, response_format: Any, stream: bool) -> str:
    if not stream:
        reply = await client.chat.completions.create(
            model=GPT, messages=USER, response_format=response_format
        )
        return reply.choices[0].message.content or ""
    chunks = await client.chat.completions.create(
        model=GPT, messages=USER, response_format=response_format, stream=True
    )
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_ollama_format_answers_validate(
    ollama_client: ollama.AsyncClient, stream: bool
) -> None:
    if stream:
        parts = [p async for p in await ollama_client.chat(MODEL, USER, format=PERSON, stream=True)]
        text = "".join(p.message.content or "" for p in parts)
    else:
        text = (await ollama_client.chat(MODEL, USER, format=PERSON)).message.content or ""
    jsonschema.validate(orjson.loads(text), PERSON)
    plain = (await ollama_client.chat(MODEL, USER, format="json")).message.content or ""
    assert isinstance(orjson.loads(plain), dict)


async def test_a_small_answer_cap_cuts_the_json_short(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.chat.completions.create(
        model=GPT, messages=USER, response_format={"type": "json_object"}, max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 2


# ----- seeds and logprobs ---------------------------------------------------------------------


async def test_the_same_seed_gives_the_same_answer(
    openai_client: openai.AsyncOpenAI, ollama_client: ollama.AsyncClient
) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}

    async def openai_answer(seed: int) -> str:
        reply = await openai_client.chat.completions.create(
            model=GPT, messages=USER, response_format=response_format, seed=seed
        )
        return reply.choices[0].message.content or ""

    assert await openai_answer(11) == await openai_answer(11)
    assert len({await openai_answer(seed) for seed in range(5)}) > 1

    async def ollama_arguments(seed: int) -> Any:
        reply = await ollama_client.chat(MODEL, USER, tools=TOOLS, options={"seed": seed})
        return [c.function.arguments for c in reply.message.tool_calls or []]

    assert await ollama_arguments(4) == await ollama_arguments(4)


async def test_logprobs_are_refused_with_a_clear_400(
    openai_client: openai.AsyncOpenAI, ollama_client: ollama.AsyncClient
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await openai_client.chat.completions.create(model=GPT, messages=USER, logprobs=True)
    assert "logprobs are not simulated" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        await openai_client.chat.completions.create(model=GPT, messages=USER, top_logprobs=2)
    plain = await openai_client.chat.completions.create(model=GPT, messages=USER, logprobs=False)
    assert plain.choices[0].message.content == answer_text(5)
    with pytest.raises(ollama.ResponseError) as refused:
        await ollama_client.chat(MODEL, USER, logprobs=True)
    assert refused.value.status_code == 400
    assert "logprobs are not simulated" in refused.value.error
