"""Ollama request bodies -> the canonical requests, checked once where they enter.

`/api/chat` and `/api/generate` become a `ChatRequest` (a generate call is one user
turn, with its `system`); `/api/embed` and the legacy `/api/embeddings` become an
`EmbeddingRequest`. `options` map to the canonical parameters (`num_predict`,
`temperature`, `top_p`, `stop`, `seed`); the rest of them, `keep_alive` and `think`
tune a particular Ollama server and are not passed on, since the answering
deployment may be another kind of server. `format` becomes a response format every
provider understands. Every problem is a 400 naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

import orjson

from bridge.errors import HttpError, bad_request
from bridge.parse import call_timeout, check_tools, routing_metadata, wrong_field
from sidecar.types import (
    ChatRequest,
    EmbeddingRequest,
    GenerationParams,
    Message,
    ToolCall,
)

_ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
# Ollama names a model without a tag as `name:latest`; aliases are listed that way.
LATEST: Final = ":latest"


@dataclass(frozen=True, slots=True)
class ParsedChat:
    request: ChatRequest
    model: str  # as the caller named it, echoed in every reply line
    stream: bool
    timeout: float | None


@dataclass(frozen=True, slots=True)
class ParsedEmbed:
    request: EmbeddingRequest
    model: str
    timeout: float | None


def alias_of(model: Any) -> str:
    """The alias a caller's model name stands for: `fast:latest` is `fast`."""
    if not isinstance(model, str) or not model:
        raise _error("model is required")
    return model.removesuffix(LATEST) or model


def parse_chat(body: dict[str, Any], request_id: str) -> ParsedChat:
    model = body.get("model")
    alias = alias_of(model)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise wrong_field("messages", messages, "an array of messages")
    turns = _paired(tuple(_message(i, m) for i, m in enumerate(messages)))
    return _chat(body, alias, str(model), turns, request_id)


def parse_generate(body: dict[str, Any], request_id: str) -> ParsedChat:
    """A generate call as one chat turn: `system`, then `prompt` with its `images`; with
    `raw`, a text completion (the prompt sent as it is where the deployment can)."""
    model = body.get("model")
    alias = alias_of(model)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise wrong_field("prompt", prompt, "a string")
    for unsupported in ("suffix", "template", "context"):
        if body.get(unsupported):
            raise bad_request(
                unsupported,
                f"{unsupported}: not supported by this router (it serves /api/generate as a "
                "chat turn); send the whole prompt in `prompt`",
            )
    system = body.get("system", "")
    if not isinstance(system, str):
        raise wrong_field("system", system, "a string")
    raw = body.get("raw", False)
    if not isinstance(raw, bool):
        raise wrong_field("raw", raw, "true or false")
    turns: list[Message] = []
    if system and not raw:
        turns.append(Message("system", system))
    turns.append(Message("user", prompt, images=_images("images", body.get("images"))))
    parsed = _chat(body, alias, str(model), tuple(turns), request_id)
    if raw:
        # No template around the prompt: a text completion, where the deployment has one.
        parsed = dataclasses.replace(
            parsed, request=dataclasses.replace(parsed.request, completion=True)
        )
    return parsed


def is_load_request(parsed: ParsedChat) -> bool:
    """An empty chat or prompt: Ollama's way to load a model, answered at once."""
    return all(not m.content and not m.images for m in parsed.request.messages)


def _chat(
    body: dict[str, Any], alias: str, model: str, turns: tuple[Message, ...], request_id: str
) -> ParsedChat:
    stream = body.get("stream", True)
    if stream is None:
        stream = True
    if not isinstance(stream, bool):
        raise wrong_field("stream", stream, "true or false")
    extra: dict[str, Any] = {}
    tools = body.get("tools")
    if tools:
        extra["tools"] = check_tools(tools)
    response_format = _format(body.get("format"))
    if response_format is not None:
        extra["response_format"] = response_format
    hints, metadata = routing_metadata(body.get("metadata"))
    request = ChatRequest(
        model=alias,
        messages=turns,
        params=_params(body.get("options")),
        extra=extra,
        metadata=metadata,
        hints=hints,
        request_id=request_id,
    )
    return ParsedChat(request, model, stream, call_timeout(body.get("timeout")))


def _message(i: int, value: Any) -> Message:
    where = f"messages[{i}]"
    if not isinstance(value, dict):
        raise wrong_field(where, value, "a message object")
    role = value.get("role")
    if role not in _ROLES:
        raise wrong_field(f"{where}.role", role, "one of system, user, assistant, tool")
    content = value.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise wrong_field(f"{where}.content", content, "a string")
    calls = _tool_calls(where, value.get("tool_calls")) if role == "assistant" else ()
    name = ""
    call_id = ""
    if role == "tool":
        name = _string(value, "tool_name", where)
        # Ollama's tool turns name the tool; the OpenAI convention needs the call's id.
        call_id = _string(value, "tool_call_id", where)
    return Message(
        role=role,
        content=content,
        name=name,
        tool_call_id=call_id,
        tool_calls=calls,
        images=_images(f"{where}.images", value.get("images")),
    )


def _paired(turns: tuple[Message, ...]) -> tuple[Message, ...]:
    """Give each tool turn without a `tool_call_id` the id of the call it answers.

    Ollama's clients name the tool (`tool_name`) rather than the call; an OpenAI or
    Anthropic deployment needs the call's id. A tool turn answers the first call of
    the latest assistant turn with that name not answered yet, else the next one.
    """
    out: list[Message] = []
    open_calls: list[ToolCall] = []
    for turn in turns:
        if turn.role == "assistant":
            open_calls = list(turn.tool_calls)
        elif turn.role == "tool" and not turn.tool_call_id:
            match = next((c for c in open_calls if c.name == turn.name), None)
            if match is None and open_calls:
                match = open_calls[0]
            if match is not None:
                open_calls.remove(match)
            call_id = match.id if match is not None else turn.name or "call"
            name = turn.name or (match.name if match is not None else "")
            turn = Message("tool", turn.content, name=name, tool_call_id=call_id)
        out.append(turn)
    return tuple(out)


def _tool_calls(where: str, value: Any) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise wrong_field(f"{where}.tool_calls", value, "an array of tool calls")
    calls = []
    for k, call in enumerate(value):
        at = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise wrong_field(f"{at}.function", function, "an object with name and arguments")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise wrong_field(f"{at}.function.name", name, "a non-empty string")
        arguments = function.get("arguments", {})
        if not isinstance(arguments, dict | str):
            raise wrong_field(f"{at}.function.arguments", arguments, "an object")
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
        call_id = call.get("id") if isinstance(call.get("id"), str) else ""
        calls.append(ToolCall(id=call_id or f"call_{k}", name=name, arguments=text, index=k))
    return tuple(calls)


def _images(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise wrong_field(where, value, "an array of base64 strings")
    return tuple(value)


def _string(value: dict[str, Any], key: str, where: str) -> str:
    item = value.get(key, "")
    if not isinstance(item, str):
        raise wrong_field(f"{where}.{key}", item, "a string")
    return item


def _params(options: Any) -> GenerationParams:
    if options is None:
        return GenerationParams()
    if not isinstance(options, dict):
        raise wrong_field("options", options, "an object")
    max_tokens = _int(options, "num_predict")
    if max_tokens is not None and max_tokens < 0:
        max_tokens = None  # -1: no limit but the context, Ollama's default
    stop = options.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise wrong_field("options.stop", stop, "an array of strings")
    return GenerationParams(
        max_tokens=max_tokens or None,
        temperature=_number(options, "temperature"),
        top_p=_number(options, "top_p"),
        stop=tuple(stop or ()),
        seed=_int(options, "seed"),
    )


def _int(options: dict[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise wrong_field(f"options.{key}", value, "an integer")
    return value


def _number(options: dict[str, Any], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise wrong_field(f"options.{key}", value, "a number")
    return float(value)


def _format(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    raise wrong_field("format", value, '"json" or a JSON schema object')


def parse_embed(body: dict[str, Any], request_id: str) -> ParsedEmbed:
    """`/api/embed`: `input` a string or an array of strings, optional `dimensions`."""
    model = body.get("model")
    alias = alias_of(model)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise wrong_field("input", raw, "a string or an array of strings")
    for i, item in enumerate(inputs):
        if not isinstance(item, str) or not item:
            raise wrong_field(f"input[{i}]", item, "a non-empty string")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise wrong_field("dimensions", dimensions, "a positive integer")
    return _embed(body, alias, str(model), tuple(inputs), dimensions, request_id)


def parse_embeddings(body: dict[str, Any], request_id: str) -> ParsedEmbed:
    """The legacy `/api/embeddings`: one `prompt`."""
    model = body.get("model")
    alias = alias_of(model)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise wrong_field("prompt", prompt, "a non-empty string")
    return _embed(body, alias, str(model), (prompt,), None, request_id)


def _embed(
    body: dict[str, Any],
    alias: str,
    model: str,
    inputs: tuple[str, ...],
    dimensions: int | None,
    request_id: str,
) -> ParsedEmbed:
    hints, metadata = routing_metadata(body.get("metadata"))
    request = EmbeddingRequest(
        model=alias,
        inputs=inputs,
        dimensions=dimensions,
        metadata=metadata,
        hints=hints,
        request_id=request_id,
    )
    return ParsedEmbed(request, model, call_timeout(body.get("timeout")))


def _error(message: str) -> HttpError:
    return bad_request(None, message)
