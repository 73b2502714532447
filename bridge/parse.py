"""OpenAI chat request bodies -> the canonical ChatRequest, checked once where they enter.

Every problem is a 400 whose `param` names the field (`messages[2].content[0].type`),
so a caller sees what to fix. Fields the sidecar does not interpret itself (tools,
tool_choice, response_format, parallel_tool_calls, user, provider extras such as
Ollama's `keep_alive`) go to `ChatRequest.extra` and on to the backends that
support them; the well-known ones are type-checked first. `metadata` carries the
routing hints (`no_fallback`, `local_only`) and free-form tags such as `task`;
`timeout` (seconds, as LiteLLM's proxy takes it) becomes the call's deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from bridge.errors import HttpError, bad_request
from sidecar.nesting import MAX_DEPTH, too_deep
from sidecar.redaction import shown
from sidecar.types import (
    ROLES,
    ChatRequest,
    GenerationParams,
    Message,
    RoutingHints,
    ThinkingBlock,
    ToolCall,
    parse_flag,
)

# Body fields this module turns into canonical fields; all others pass through in `extra`.
_CONSUMED: Final = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "metadata",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "timeout",
    }
)
_TOOL_CHOICES: Final = frozenset({"none", "auto", "required"})
_HINTS: Final = ("local_only", "no_fallback")


@dataclass(frozen=True, slots=True)
class ParsedChat:
    request: ChatRequest
    stream: bool
    include_usage: bool
    # Seconds the caller gives the whole call (LiteLLM's `timeout` field), None for no limit.
    timeout: float | None = None


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; 400 naming what is wrong with it otherwise."""
    if not raw:
        raise bad_request(None, "the request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise bad_request(
                None, f"the request body is not valid UTF-8 (byte {bad.start}: {bad.reason})"
            ) from None
        where = f"line {exc.lineno}, column {exc.colno}"
        raise bad_request(None, f"the request body is not valid JSON (at {where})") from None
    if not isinstance(body, dict):
        raise bad_request(None, f"the request body must be a JSON object, not {_kind(body)}")
    if too_deep(body):
        # Checked here, once: deeper data would fail to serialise on its way upstream.
        raise bad_request(None, f"the request body nests more than {MAX_DEPTH} levels deep")
    return body


def parse_chat(body: dict[str, Any], request_id: str) -> ParsedChat:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _wrong("model", model, "a non-empty string")
    n = body.get("n")
    if n is not None and (_not_int(n) or n != 1):
        raise bad_request("n", f"only n=1 is supported, got {_quoted(n)}")
    stream = _optional(body, "stream", _is_bool, "a boolean") or False
    include_usage = _stream_options(body.get("stream_options"), stream)
    hints, metadata = _metadata(body.get("metadata"))
    extra = {k: v for k, v in body.items() if k not in _CONSUMED and v is not None}
    if extra:
        _check_extra(extra)
    request = ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        params=_params(body),
        extra=extra,
        metadata=metadata,
        hints=hints,
        request_id=request_id,
    )
    return ParsedChat(request, stream, include_usage, _timeout(body.get("timeout")))


# -- messages -------------------------------------------------------------------------


def _messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise bad_request("messages", "messages: required", code="missing_required_parameter")
    if not isinstance(value, list):
        raise _wrong("messages", value, "an array of message objects")
    if not value:
        raise bad_request("messages", "messages: at least one message is required")
    return tuple(_message(i, m) for i, m in enumerate(value))


def _message(i: int, value: Any) -> Message:
    where = f"messages[{i}]"
    if not isinstance(value, dict):
        raise _wrong(where, value, "a message object")
    role = value.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise bad_request(
            f"{where}.role",
            f"{where}.role: {_quoted(role)} is not one of {', '.join(sorted(ROLES))}",
        )
    content, images = _content(where, role, value.get("content"))
    name = _optional(value, "name", _is_str, "a string", where) or ""
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[ThinkingBlock, ...] = ()
    tool_call_id = ""
    if role == "assistant":
        tool_calls = _tool_calls(where, value.get("tool_calls"))
        thinking = _thinking_blocks(where, value.get("thinking_blocks"))
    elif role == "tool":
        answered = value.get("tool_call_id")
        if not isinstance(answered, str) or not answered:
            raise _wrong(f"{where}.tool_call_id", answered, "a non-empty string")
        tool_call_id = answered
    if content is None and role != "assistant":
        raise bad_request(f"{where}.content", f"{where}.content: required for role {role!r}")
    return Message(
        role=role,
        content=content or "",
        name=name,
        tool_call_id=tool_call_id,
        tool_calls=tool_calls,
        images=images,
        thinking=thinking,
    )


def _thinking_blocks(where: str, value: Any) -> tuple[ThinkingBlock, ...]:
    """LiteLLM's `thinking_blocks` of an assistant turn, taken exactly as the answer gave
    them: Anthropic refuses the next turn of a tool loop if they changed."""
    if value is None:
        return ()
    where = f"{where}.thinking_blocks"
    if not isinstance(value, list):
        raise _wrong(where, value, "an array of thinking blocks")
    blocks = []
    for k, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        signed = kind == "thinking" and _is_str(block.get("signature"))
        if signed and _is_str(block.get("thinking")):
            blocks.append(ThinkingBlock(block["thinking"], block["signature"]))
        elif kind == "redacted_thinking" and _is_str(block.get("data")):
            blocks.append(ThinkingBlock(redacted=block["data"]))
        else:
            raise _wrong(
                f"{where}[{k}]",
                block,
                'a {"type": "thinking", "thinking", "signature"} or '
                '{"type": "redacted_thinking", "data"} object',
            )
    return tuple(blocks)


def _content(where: str, role: str, value: Any) -> tuple[str | None, tuple[str, ...]]:
    """Text and images of a message; parts arrays are joined, images kept apart."""
    if value is None or isinstance(value, str):
        return value, ()
    where = f"{where}.content"
    if not isinstance(value, list):
        raise _wrong(where, value, "a string or an array of content parts")
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise _wrong(at, part, "a content part object")
        kind = part.get("type")
        if kind == "text" or (kind == "refusal" and role == "assistant"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise _wrong(f"{at}.{kind}", text, "a string")
            texts.append(text)
        elif kind == "image_url" and role == "user":
            images.append(_image_url(at, part.get("image_url")))
        else:
            raise bad_request(
                f"{at}.type",
                f"{at}.type: content part {_quoted(kind)} is not supported in a {role} message "
                "(supported: text, and image_url in user messages)",
            )
    # Separate parts are separate blocks of text, as chat templates render them.
    return "\n".join(texts), tuple(images)


def _image_url(at: str, value: Any) -> str:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise _wrong(f"{at}.image_url.url", url, "a non-empty string (a URL or a data: URL)")
    return url


def _tool_calls(where: str, value: Any) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    where = f"{where}.tool_calls"
    if not isinstance(value, list):
        raise _wrong(where, value, "an array of tool calls")
    calls = []
    for k, call in enumerate(value):
        at = f"{where}[{k}]"
        if not isinstance(call, dict):
            raise _wrong(at, call, "a tool call object")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise _wrong(f"{at}.id", call_id, "a non-empty string")
        function = call.get("function")
        if not isinstance(function, dict):
            raise _wrong(f"{at}.function", function, "an object with name and arguments")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _wrong(f"{at}.function.name", name, "a non-empty string")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise _wrong(f"{at}.function.arguments", arguments, "a string of JSON")
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments, index=k))
    return tuple(calls)


# -- generation parameters, options, metadata ----------------------------------------------


def _params(body: dict[str, Any]) -> GenerationParams:
    max_tokens = _optional(body, "max_completion_tokens", _is_int, "an integer")
    if max_tokens is None:
        max_tokens = _optional(body, "max_tokens", _is_int, "an integer")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=_optional(body, "temperature", _is_number, "a number"),
        top_p=_optional(body, "top_p", _is_number, "a number"),
        stop=_stop(body.get("stop")),
        seed=_optional(body, "seed", _is_int, "an integer"),
    )


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise _wrong("stop", value, "a string or an array of strings")


def _stream_options(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise bad_request("stream_options", "stream_options: only allowed when stream is true")
    if not isinstance(value, dict):
        raise _wrong("stream_options", value, "an object")
    include = value.get("include_usage", False)
    if not isinstance(include, bool):
        raise _wrong("stream_options.include_usage", include, "a boolean")
    return include


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not value > 0:
        raise _wrong("timeout", value, "a number of seconds above 0")
    return float(value)


def _metadata(value: Any) -> tuple[RoutingHints, dict[str, str]]:
    if value is None:
        return RoutingHints(), {}
    if not isinstance(value, dict):
        raise _wrong("metadata", value, "an object")
    flags = dict.fromkeys(_HINTS, False)
    tags: dict[str, str] = {}
    for key, item in value.items():
        if key in flags:
            flags[key] = _flag(f"metadata.{key}", item)
        else:
            tags[key] = item if isinstance(item, str) else orjson.dumps(item).decode()
    return RoutingHints(**flags), tags


def _flag(param: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    # The OpenAI SDK types metadata values as strings, so "true" must work as well as true.
    if isinstance(value, str):
        flag = parse_flag(value)
        if flag is not None:
            return flag
    raise _wrong(param, value, 'a boolean (or "true"/"false")')


def _check_extra(extra: dict[str, Any]) -> None:
    """Type-check the passthrough fields backends interpret; others are forwarded as they are."""
    for key, (check, expected) in _EXTRA_TYPES.items():
        if key in extra and not check(extra[key]):
            raise _wrong(key, extra[key], expected)
    tools = extra.get("tools")
    if tools is not None:
        for i, tool in enumerate(tools):
            _check_tool(i, tool)
    choice = extra.get("tool_choice")
    if isinstance(choice, str) and choice not in _TOOL_CHOICES:
        raise bad_request(
            "tool_choice", f"tool_choice: {shown(choice)} is not one of none, auto, required"
        )


def _check_tool(i: int, tool: Any) -> None:
    at = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise _wrong(at, tool, "a tool object")
    if tool.get("type", "function") != "function":
        return  # other tool kinds are the backend's to accept or refuse
    function = tool.get("function")
    if not isinstance(function, dict):
        raise _wrong(f"{at}.function", function, "an object with a name")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _wrong(f"{at}.function.name", name, "a non-empty string")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _wrong(f"{at}.function.parameters", parameters, "a JSON schema object")


# -- small checks ---------------------------------------------------------------------------


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _not_int(value: Any) -> bool:
    return not _is_int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _is_tool_choice(value: Any) -> bool:
    return isinstance(value, str | dict)


_EXTRA_TYPES: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "tools": (_is_list, "an array of tool objects"),
    "tool_choice": (_is_tool_choice, 'a string ("none", "auto", "required") or an object'),
    "response_format": (_is_object, "an object such as {'type': 'json_object'}"),
    "parallel_tool_calls": (_is_bool, "a boolean"),
    "user": (_is_str, "a string"),
    "frequency_penalty": (_is_number, "a number"),
    "presence_penalty": (_is_number, "a number"),
    "logprobs": (_is_bool, "a boolean"),
    "top_logprobs": (_is_int, "an integer"),
    "logit_bias": (_is_object, "an object"),
}


def _optional(
    body: dict[str, Any],
    key: str,
    check: Callable[[Any], bool],
    expected: str,
    where: str = "",
) -> Any:
    value = body.get(key)
    if value is None or check(value):
        return value
    raise _wrong(f"{where}.{key}" if where else key, value, expected)


def _wrong(param: str, value: Any, expected: str) -> HttpError:
    if value is None:
        return bad_request(param, f"{param}: required, expected {expected}")
    return bad_request(param, f"{param}: expected {expected}, got {_kind(value)}")


def _quoted(value: Any) -> str:
    """A caller's value as a message shows it: short, quoted, never at length."""
    if isinstance(value, int | float | bool | None):
        return repr(value)
    return shown(value, 40) if isinstance(value, str) else _kind(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {shown(value, 40)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- shared with the other front doors (embeddings, completions, Ollama) ----------------
# Their fields mean what they mean here, checked and named the same way.


def routing_metadata(value: Any) -> tuple[RoutingHints, dict[str, str]]:
    """`metadata`: the routing hints and the free-form tags (caller, task, ...)."""
    return _metadata(value)


def call_timeout(value: Any) -> float | None:
    """`timeout`: the seconds the caller gives the whole call, None for no limit."""
    return _timeout(value)


def include_usage(value: Any, stream: bool) -> bool:
    """`stream_options`: whether a stream ends with a usage frame."""
    return _stream_options(value, stream)


def wrong_field(param: str, value: Any, expected: str) -> HttpError:
    """A 400 naming `param`, what was expected and what came instead."""
    return _wrong(param, value, expected)


def check_tools(value: Any) -> list[Any]:
    """`tools`: an array of OpenAI-style tool objects, each checked as chat checks it."""
    if not isinstance(value, list):
        raise _wrong("tools", value, "an array of tool objects")
    for i, tool in enumerate(value):
        _check_tool(i, tool)
    return value
