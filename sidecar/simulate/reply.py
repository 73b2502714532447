"""What a simulated model answers, whichever protocol carries it.

A request with tools gets a call to one of them, its arguments an instance of
the tool's parameter schema, unless the last message is a tool result (then
the model answers in text, as a model reading the result does) or the caller
forbade calls; a forced choice (a named tool, or "required") is called
whatever came before. A request for JSON gets JSON: an instance of the schema
it names (`json_schema`, or Ollama's `format` schema), or, for a bare JSON
object, of a schema written into the prompt, else `{"answer": ...}`. Anything
else gets the profile's "tok0 tok1 ..." text. Tool choice and generated values
come from a generator seeded with the request's `seed` when it has one, so the
same request and seed give the same answer. Token log probabilities are refused
with a 400 (`LOGPROBS_REFUSED`): inventing them would mislead whoever reads them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sidecar.simulate.profile import answer_text
from sidecar.simulate.schema import instance, schema_in_text

# Characters per streamed piece of a generated answer, about one token.
_PIECE: Final = 4
# Token log probabilities are refused rather than made up or silently dropped.
LOGPROBS_REFUSED: Final = (
    "logprobs are not simulated: this simulated model has no token probabilities to "
    "report; send the request without logprobs and top_logprobs"
)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """The request wants JSON: an instance of `schema` (an object when it is None)."""

    schema: Mapping[str, Any] | None = None


def choose_tool(
    tools: Sequence[Tool], messages: Sequence[object], *, forced: str | None, allowed: bool
) -> Tool | None:
    """The tool to call, or None to answer in text.

    `forced` names the tool that must be called ("" for any, as "required" says);
    `allowed` is false when the caller said "none".
    """
    if not tools or not allowed:
        return None
    if forced is not None:
        return next((t for t in tools if t.name == forced), tools[0])
    if _last_role(messages) == "tool":
        return None
    # The tool the user's words name, else the first, as a model would pick.
    words = _last_user_text(messages)
    return next((t for t in tools if t.name in words), tools[0])


def output_for(
    response_format: object, messages: Sequence[object], *, ollama_format: object = None
) -> JsonOutput | None:
    """What `response_format` (OpenAI) or `format` (Ollama) asks for; None for text."""
    if ollama_format == "json":
        return JsonOutput(schema_in_text(_all_text(messages)))
    if isinstance(ollama_format, Mapping):
        return JsonOutput(ollama_format)
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return JsonOutput(schema_in_text(_all_text(messages)))
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return JsonOutput(schema if isinstance(schema, Mapping) else None)
    return None


def arguments(tool: Tool, rng: random.Random) -> dict[str, Any]:
    """Arguments for a call of `tool`: required properties present, types right."""
    value = instance(tool.parameters, rng)
    return value if isinstance(value, dict) else {}


def json_text(output: JsonOutput, rng: random.Random, answer_tokens: int) -> str:
    if output.schema is None:
        return orjson.dumps({"answer": answer_text(answer_tokens).strip()}).decode()
    return orjson.dumps(instance(output.schema, rng)).decode()


def pieces(text: str) -> tuple[str, ...]:
    """`text` cut into token-sized pieces, to stream one per frame."""
    return tuple(text[i : i + _PIECE] for i in range(0, len(text), _PIECE))


def generator(seed: object, fallback: random.Random) -> random.Random:
    """A generator seeded with the request's seed, else the simulator's own."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return random.Random(seed)
    return fallback


def _last_role(messages: Sequence[object]) -> object:
    last = messages[-1] if messages else None
    return last.get("role") if isinstance(last, Mapping) else None


def _last_user_text(messages: Sequence[object]) -> str:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _text(message)
    return ""


def _all_text(messages: Sequence[object]) -> str:
    return "\n".join(_text(m) for m in messages if isinstance(m, Mapping))


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
