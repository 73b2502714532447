"""OpenAI Responses request bodies -> the canonical ChatRequest, checked once.

The sidecar keeps no state, so what depends on stored responses is refused with a
400 naming the field (`previous_response_id`, `conversation`, `item_reference`
items, `background`); `store: true` is accepted, and the answer says `store: false`.
`instructions` becomes a leading system message, message items become turns,
`function_call` items the assistant's tool calls and `function_call_output` items
tool results, as Chat Completions has them. Function tools and tool_choice take
Chat Completions' nested shapes, `text.format` becomes `response_format`, and
`reasoning.effort` becomes `reasoning_effort`. OpenAI's hosted tools (web search,
file search, ...) run on OpenAI's servers, not on a routed model, so they are refused.
Reasoning items sent back are dropped: their encrypted content is only readable by
the OpenAI deployment that made it, and the canonical request cannot carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bridge.errors import bad_request
from bridge.parse import _is_int, _is_number, _metadata, _quoted, _wrong
from sidecar.types import ChatRequest, GenerationParams, Message, ToolCall

_STATEFUL: Final = ("previous_response_id", "conversation")
_TOOL_CHOICES: Final = frozenset({"none", "auto", "required"})
_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    request: ChatRequest
    stream: bool
    # Echoed in the Response object, as OpenAI does.
    echo: dict[str, Any]


def parse_response(body: dict[str, Any], request_id: str) -> ParsedResponse:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _wrong("model", model, "a non-empty string")
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise bad_request(
                key,
                f"{key}: this gateway keeps no responses or conversations (it is stateless); "
                "send the whole conversation in `input`, including earlier function_call "
                "and function_call_output items",
                code="unsupported_parameter",
            )
    if body.get("background"):
        raise bad_request(
            "background",
            "background: not supported; this gateway keeps no responses to poll",
            code="unsupported_parameter",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _wrong("stream", stream, "a boolean")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise _wrong("store", store, "a boolean")
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise _wrong("max_output_tokens", max_tokens, "an integer of at least 1")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _wrong("instructions", instructions, "a string")
    messages = [Message(role="system", content=instructions)] if instructions else []
    messages.extend(_input(body.get("input")))
    if not messages:
        raise bad_request("input", "input: at least one input item is required")
    hints, tags = _metadata(body.get("metadata"))
    extra = _extra(body)
    request = ChatRequest(
        model=model,
        messages=tuple(messages),
        params=GenerationParams(
            max_tokens=max_tokens,
            temperature=_number(body, "temperature"),
            top_p=_number(body, "top_p"),
        ),
        extra=extra,
        metadata=tags,
        hints=hints,
        request_id=request_id,
    )
    echo = {
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "temperature": request.params.temperature,
        "top_p": request.params.top_p,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "metadata": body.get("metadata") or {},
    }
    return ParsedResponse(request, stream, echo)


# -- input items ------------------------------------------------------------------------------


def _input(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list):
        raise _wrong("input", value, "a string or an array of input items")
    out: list[Message] = []
    for i, item in enumerate(value):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise _wrong(at, item, "an input item object")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(at, item))
        elif kind == "function_call":
            _function_call(at, item, out)
        elif kind == "function_call_output":
            out.append(_function_output(at, item))
        elif kind == "reasoning":
            continue  # see the module's docstring
        elif kind == "item_reference":
            raise bad_request(
                at,
                f"{at}: item_reference needs stored items, and this gateway keeps none; "
                "send the item itself",
                code="unsupported_parameter",
            )
        else:
            raise bad_request(
                f"{at}.type",
                f"{at}.type: {_quoted(kind)} items are not supported (supported: message, "
                "function_call, function_call_output, reasoning)",
            )
    return out


def _message(at: str, item: dict[str, Any]) -> Message:
    role = item.get("role")
    if role not in _ROLES:
        raise bad_request(
            f"{at}.role",
            f"{at}.role: {_quoted(role)} is not one of {', '.join(sorted(_ROLES))}",
        )
    content = item.get("content")
    if isinstance(content, str):
        return Message(role=role, content=content)
    if not isinstance(content, list):
        raise _wrong(f"{at}.content", content, "a string or an array of content parts")
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            texts.append(_string(f"{where}.text", part.get("text")))
        elif kind == "refusal":
            texts.append(_string(f"{where}.refusal", part.get("refusal")))
        elif kind == "input_image" and role == "user":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _wrong(
                    f"{where}.image_url", url, "a URL or a data: URL (file_id needs stored files)"
                )
            images.append(url)
        else:
            raise bad_request(
                f"{where}.type",
                f"{where}.type: {_quoted(kind)} is not supported in a {role} message "
                "(supported: input_text, output_text, refusal, and input_image in user messages)",
            )
    return Message(role=role, content="\n".join(texts), images=tuple(images))


def _function_call(at: str, item: dict[str, Any], out: list[Message]) -> None:
    """A call the model made, joined to the assistant turn it belongs to."""
    call_id = _string(f"{at}.call_id", item.get("call_id"))
    name = _string(f"{at}.name", item.get("name"))
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise _wrong(f"{at}.arguments", arguments, "a string of JSON")
    previous = out[-1] if out else None
    if previous is not None and previous.role == "assistant":
        call = ToolCall(call_id, name, arguments, len(previous.tool_calls))
        out[-1] = Message(
            role="assistant",
            content=previous.content,
            tool_calls=(*previous.tool_calls, call),
            thinking=previous.thinking,
        )
    else:
        out.append(Message(role="assistant", tool_calls=(ToolCall(call_id, name, arguments, 0),)))


def _function_output(at: str, item: dict[str, Any]) -> Message:
    call_id = _string(f"{at}.call_id", item.get("call_id"))
    output = item.get("output")
    if isinstance(output, list):
        parts = []
        for j, part in enumerate(output):
            where = f"{at}.output[{j}]"
            if not isinstance(part, dict) or part.get("type") != "input_text":
                raise _wrong(where, part, "an input_text part")
            parts.append(_string(f"{where}.text", part.get("text")))
        output = "\n".join(parts)
    if not isinstance(output, str):
        raise _wrong(f"{at}.output", output, "a string or an array of input_text parts")
    return Message(role="tool", content=output, tool_call_id=call_id)


# -- settings ----------------------------------------------------------------------------------


def _extra(body: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _wrong("tools", tools, "an array of tools")
        if tools:
            extra["tools"] = [_tool(i, t) for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        extra["tool_choice"] = _tool_choice(choice)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _wrong("parallel_tool_calls", parallel, "a boolean")
        extra["parallel_tool_calls"] = parallel
    text = body.get("text")
    if text is not None:
        response_format = _text_format(text)
        if response_format is not None:
            extra["response_format"] = response_format
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _wrong("reasoning", reasoning, "an object")
        effort = reasoning.get("effort")
        if effort is not None:
            extra["reasoning_effort"] = _string("reasoning.effort", effort)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        extra["user"] = user
    return extra


def _tool(i: int, tool: Any) -> dict[str, Any]:
    at = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise _wrong(at, tool, "a tool object")
    kind = tool.get("type")
    if kind != "function":
        raise bad_request(
            f"{at}.type",
            f"{at}.type: {_quoted(kind)} is a tool OpenAI hosts, which a routed model cannot "
            "run; only function tools are supported",
        )
    function: dict[str, Any] = {"name": _string(f"{at}.name", tool.get("name"))}
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise _wrong(f"{at}.parameters", parameters, "a JSON schema object")
        function["parameters"] = parameters
    for key in ("description", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise bad_request(
                "tool_choice", f"tool_choice: {_quoted(choice)} is not one of none, auto, required"
            )
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = _string("tool_choice.name", choice.get("name"))
        return {"type": "function", "function": {"name": name}}
    raise _wrong(
        "tool_choice", choice, 'one of "none", "auto", "required" or {"type": "function", "name"}'
    )


def _text_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise _wrong("text", text, "an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _wrong("text.format.schema", schema, "a JSON schema object")
        nested: dict[str, Any] = {"name": _string("text.format.name", fmt.get("name"))}
        nested["schema"] = schema
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                nested[key] = fmt[key]
        return {"type": "json_schema", "json_schema": nested}
    raise _wrong(
        "text.format", fmt, 'a format whose type is "text", "json_object" or "json_schema"'
    )


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None or _is_number(value):
        return value
    raise _wrong(key, value, "a number")


def _string(param: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _wrong(param, value, "a non-empty string")
    return value
