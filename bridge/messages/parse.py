"""Anthropic Messages request bodies -> the canonical ChatRequest, checked once.

Every problem is a 400 naming the field the way Anthropic does (`messages.2.content.0.type`).
The canonical request is OpenAI-shaped, so this is the Anthropic provider's
translation run backwards: `system` becomes a leading system message, `tool_result`
blocks become tool messages (ahead of the rest of their user turn, which is how the
provider merges them back), `tool_use` blocks become tool calls with JSON-text
arguments, thinking blocks are kept exactly as sent, and tools and tool_choice take
OpenAI's shapes, which every provider reads. Claude-only settings (`thinking`,
`top_k`, the top-level `cache_control`, `service_tier`, `container`, `metadata.user_id`)
go to `extra`, which the Anthropic provider passes on as they are.

Block types the canonical request cannot carry (documents, search results, server tool
results) are refused rather than dropped: the privacy rules must see all the text a
request sends, and nothing may reach a model silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from bridge.errors import HttpError, bad_request
from bridge.parse import _is_int, _is_number, _is_str, _kind, _metadata, _quoted
from sidecar.types import (
    CACHE_BREAKPOINTS,
    ChatRequest,
    GenerationParams,
    Message,
    ThinkingBlock,
    ToolCall,
)

# Settings only Claude reads, passed on in `extra` for the Anthropic provider.
_CLAUDE_ONLY: Final = ("thinking", "service_tier", "container")
_TOOL_CHOICES: Final = {"auto": "auto", "any": "required", "none": "none"}
_ROLES: Final = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class ParsedMessages:
    request: ChatRequest
    stream: bool


def parse_messages(body: dict[str, Any], request_id: str) -> ParsedMessages:
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _wrong("max_tokens", max_tokens, "an integer of at least 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _wrong("stream", stream, "a boolean")
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=_stop_sequences(body.get("stop_sequences")),
    )
    return ParsedMessages(_request(body, request_id, params), stream)


def parse_count(body: dict[str, Any], request_id: str) -> ChatRequest:
    """A count_tokens body: the prompt fields of a Messages request, no max_tokens."""
    return _request(body, request_id, GenerationParams())


def _request(body: dict[str, Any], request_id: str, params: GenerationParams) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _wrong("model", model, "a non-empty string")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _wrong("metadata", metadata, "an object")
    # Anthropic's metadata has one field, user_id, which Claude reads; the sidecar's
    # routing hints and tags may ride beside it, as at the OpenAI door.
    hints, tags = _metadata(metadata)
    messages, marks = prompt(body)
    extra = _extra(body)
    if marks:
        extra[CACHE_BREAKPOINTS] = marks
    return ChatRequest(
        model=model,
        messages=messages,
        params=params,
        extra=extra,
        metadata=tags,
        hints=hints,
        request_id=request_id,
    )


def prompt(body: dict[str, Any]) -> tuple[tuple[Message, ...], list[list[Any]]]:
    """The system prompt and the turns, as canonical messages, and the cache breakpoints
    among them: [message index, cache_control] for each message that had one."""
    out = _Prompt()
    _system(body.get("system"), out)
    value = body.get("messages")
    if not isinstance(value, list):
        raise _wrong("messages", value, "an array of messages")
    if not value:
        raise bad_request("messages", "messages: at least one message is required")
    for i, message in enumerate(value):
        _turn(i, message, out)
    return tuple(out.messages), out.marks


class _Prompt:
    """Canonical messages as they are made, with the cache breakpoint of each."""

    __slots__ = ("marks", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.marks: list[list[Any]] = []

    def add(self, message: Message, mark: dict[str, str] | None) -> None:
        if mark is not None:
            self.marks.append([len(self.messages), mark])
        self.messages.append(message)


# -- system and turns ---------------------------------------------------------------------


def _system(value: Any, out: _Prompt) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if value:
            out.add(Message(role="system", content=value), None)
        return
    if not isinstance(value, list):
        raise _wrong("system", value, "a string or an array of text blocks")
    texts = []
    mark = None
    for j, block in enumerate(value):
        at = f"system.{j}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _wrong(at, block, 'a {"type": "text", "text": ...} block')
        texts.append(_text(at, block))
        mark = _mark(at, block) or mark
    if texts:
        out.add(Message(role="system", content="\n".join(texts)), mark)


def _turn(i: int, value: Any, out: _Prompt) -> None:
    where = f"messages.{i}"
    if not isinstance(value, dict):
        raise _wrong(where, value, "a message object")
    role = value.get("role")
    if role not in _ROLES:
        raise bad_request(
            f"{where}.role", f"{where}.role: {_quoted(role)} is not one of user, assistant"
        )
    content = value.get("content")
    if isinstance(content, str):
        out.add(Message(role=role, content=content), None)
    elif not isinstance(content, list):
        raise _wrong(f"{where}.content", content, "a string or an array of content blocks")
    elif role == "user":
        _user(f"{where}.content", content, out)
    else:
        _assistant(f"{where}.content", content, out)


def _user(where: str, blocks: list[Any], out: _Prompt) -> None:
    """Tool results first, each its own tool message, then the turn's text and images."""
    texts: list[str] = []
    images: list[str] = []
    mark = None
    answered = False
    for j, block in enumerate(blocks):
        at = f"{where}.{j}"
        kind = _block_type(at, block)
        if kind == "text":
            texts.append(_text(at, block))
        elif kind == "image":
            images.append(_image(at, block.get("source")))
        elif kind == "tool_result":
            out.add(_tool_result(at, block), _mark(at, block))
            answered = True
            continue
        else:
            raise _unsupported(at, kind, "text, image and tool_result")
        mark = _mark(at, block) or mark
    if texts or images or not answered:
        out.add(Message(role="user", content="\n".join(texts), images=tuple(images)), mark)


def _assistant(where: str, blocks: list[Any], out: _Prompt) -> None:
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[ThinkingBlock] = []
    mark = None
    for j, block in enumerate(blocks):
        at = f"{where}.{j}"
        kind = _block_type(at, block)
        if kind == "text":
            texts.append(_text(at, block))
        elif kind == "tool_use":
            calls.append(_tool_use(at, block, len(calls)))
        elif kind == "thinking":
            text, signature = block.get("thinking"), block.get("signature")
            if not _is_str(text) or not _is_str(signature):
                raise _wrong(at, block, "a thinking block with string thinking and signature")
            thinking.append(ThinkingBlock(text, signature))
        elif kind == "redacted_thinking":
            data = block.get("data")
            if not _is_str(data):
                raise _wrong(f"{at}.data", data, "a string")
            thinking.append(ThinkingBlock(redacted=data))
        else:
            raise _unsupported(at, kind, "text, tool_use, thinking and redacted_thinking")
        mark = _mark(at, block) or mark
    message = Message(
        role="assistant",
        content="\n".join(texts),
        tool_calls=tuple(calls),
        thinking=tuple(thinking),
    )
    out.add(message, mark)


def _mark(at: str, block: dict[str, Any]) -> dict[str, str] | None:
    return _cache_control(f"{at}.cache_control", block.get("cache_control"))


def _cache_control(param: str, value: Any) -> dict[str, str] | None:
    """A prompt-cache marker, rebuilt from its known fields: nothing else of the caller's
    reaches the upstream through it."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind != "ephemeral":
        raise _wrong(param, value, '{"type": "ephemeral", "ttl"?: "5m" | "1h"}')
    mark = {"type": "ephemeral"}
    ttl = value.get("ttl")
    if ttl is not None:
        if ttl not in ("5m", "1h"):
            raise _wrong(f"{param}.ttl", ttl, '"5m" or "1h"')
        mark["ttl"] = ttl
    return mark


def _block_type(at: str, block: Any) -> str:
    if not isinstance(block, dict):
        raise _wrong(at, block, "a content block object")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _wrong(f"{at}.type", kind, "a string")
    return kind


def _text(at: str, block: dict[str, Any]) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _wrong(f"{at}.text", text, "a string")
    return text


def _image(at: str, source: Any) -> str:
    """An image as the canonical request carries it: a URL, or a data: URL."""
    at = f"{at}.source"
    if not isinstance(source, dict):
        raise _wrong(at, source, "an object")
    kind = source.get("type")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise _wrong(f"{at}.url", url, "a non-empty string")
        return url
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not media.startswith("image/"):
            raise _wrong(f"{at}.media_type", media, "an image media type such as image/png")
        if not isinstance(data, str) or not data:
            raise _wrong(f"{at}.data", data, "a non-empty base64 string")
        return f"data:{media};base64,{data}"
    raise bad_request(
        f"{at}.type", f"{at}.type: {_quoted(kind)} is not supported (supported: base64, url)"
    )


def _tool_result(at: str, block: dict[str, Any]) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _wrong(f"{at}.tool_use_id", call_id, "a non-empty string")
    content = block.get("content", "")
    if isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            where = f"{at}.content.{k}"
            kind = _block_type(where, part)
            if kind != "text":
                raise _unsupported(where, kind, "text in a tool result")
            parts.append(_text(where, part))
        content = "\n".join(parts)
    elif not isinstance(content, str):
        raise _wrong(f"{at}.content", content, "a string or an array of text blocks")
    return Message(role="tool", content=content, tool_call_id=call_id)


def _tool_use(at: str, block: dict[str, Any], index: int) -> ToolCall:
    call_id, name, given = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise _wrong(f"{at}.id", call_id, "a non-empty string")
    if not isinstance(name, str) or not name:
        raise _wrong(f"{at}.name", name, "a non-empty string")
    if not isinstance(given, dict):
        raise _wrong(f"{at}.input", given, "an object")
    return ToolCall(id=call_id, name=name, arguments=orjson.dumps(given).decode(), index=index)


# -- parameters, tools and Claude's own settings -------------------------------------------


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None or _is_number(value):
        return value
    raise _wrong(key, value, "a number")


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise _wrong("stop_sequences", value, "an array of strings")


def _extra(body: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key in _CLAUDE_ONLY:
        value = body.get(key)
        if value is not None:
            if not isinstance(value, dict | str):
                raise _wrong(key, value, "an object")
            extra[key] = value
    mark = _cache_control("cache_control", body.get("cache_control"))
    if mark is not None:
        extra["cache_control"] = mark
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k):
            raise _wrong("top_k", top_k, "an integer")
        extra["top_k"] = top_k
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id") is not None:
        user = metadata["user_id"]
        if not isinstance(user, str):
            raise _wrong("metadata.user_id", user, "a string")
        extra["metadata"] = {"user_id": user}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _wrong("tools", tools, "an array of tools")
        extra["tools"] = [_tool(i, t) for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        extra.update(_tool_choice(choice))
    return extra


def _tool(i: int, tool: Any) -> dict[str, Any]:
    """A client tool in OpenAI's function shape (the canonical one); a server tool
    (web search, code execution, ...) as it is, for Claude alone to run."""
    at = f"tools.{i}"
    if not isinstance(tool, dict):
        raise _wrong(at, tool, "a tool object")
    if tool.get("type", "custom") != "custom":
        return tool
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise _wrong(f"{at}.name", name, "a non-empty string")
    if not isinstance(schema, dict):
        raise _wrong(f"{at}.input_schema", schema, "a JSON schema object")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise _wrong(f"{at}.description", description, "a string")
        function["description"] = description
    out: dict[str, Any] = {"type": "function", "function": function}
    mark = _mark(at, tool)
    if mark is not None:
        out["cache_control"] = mark
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in _TOOL_CHOICES:
        out: dict[str, Any] = {"tool_choice": _TOOL_CHOICES[kind]}
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _wrong("tool_choice.name", name, "a non-empty string")
        out = {"tool_choice": {"type": "function", "function": {"name": name}}}
    else:
        raise _wrong(
            "tool_choice", choice, 'an object whose type is "auto", "any", "tool" or "none"'
        )
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise _wrong("tool_choice.disable_parallel_tool_use", disable, "a boolean")
        if disable:
            out["parallel_tool_calls"] = False
    return out


def _unsupported(at: str, kind: str, supported: str) -> HttpError:
    return bad_request(
        f"{at}.type",
        f"{at}.type: {_quoted(kind)} blocks are not supported here (supported: {supported})",
    )


def _wrong(param: str, value: Any, expected: str) -> HttpError:
    if value is None:
        return bad_request(param, f"{param}: Field required, expected {expected}")
    return bad_request(param, f"{param}: expected {expected}, got {_kind(value)}")
