"""Anthropic Messages: POST {api_base}/v1/messages, answered as SSE with named events.

The canonical request is OpenAI-shaped, so this module is mostly translation:
system and developer messages are lifted into the top-level `system`, tool results
become `tool_result` blocks in a user turn, the assistant's tool calls become
`tool_use` blocks whose `input` is an object, and `max_tokens` (required by the
API) is always sent. On the way back, tool blocks are numbered 0, 1, ... in the
order they open, which is the index OpenAI-style callers accumulate by; usage is
read from `message_start` and the cumulative `message_delta`, and the prompt count
includes the cached tokens that Anthropic's `input_tokens` leaves out. Thinking
streams as reasoning text, and each thinking block goes out whole (with its
signature) when it closes, so that the caller can send it back in the next turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

import orjson

from sidecar.config.model import Deployment
from sidecar.errors import (
    EmbeddingUnsupported,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sidecar.providers.base import ProbeResult
from sidecar.providers.http import HttpPool, malformed, probe_model_list
from sidecar.providers.relay import Draft, relay
from sidecar.providers.sse import Event, SseReader
from sidecar.types import (
    CACHE_BREAKPOINTS,
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    Embeddings,
    Message,
    ThinkingBlock,
    ToolCall,
    Usage,
)

API_VERSION: Final = "2023-06-01"
# The API has no default output cap; this is the one sent when neither the request
# nor the deployment gives one.
DEFAULT_MAX_TOKENS: Final = 4096
# Fields of `extra` that the Messages API reads as they are; OpenAI-only fields
# (response_format, frequency_penalty, user, ...) would be refused with a 400.
_PASSTHROUGH: Final = frozenset(
    {"top_k", "thinking", "metadata", "cache_control", "service_tier", "container"}
)
# Stop reasons with an OpenAI counterpart. Any other (pause_turn, and those added
# later) is reported as Anthropic named it, so a caller never mistakes it for a
# finished answer.
FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Mid-stream error types that another deployment, or a later retry, may not hit.
_RETRYABLE_ERRORS: Final = frozenset({"overloaded_error", "api_error", "timeout_error"})


class AnthropicProvider:
    # No text-completion endpoint (the legacy /v1/complete is retired): a chat turn.
    completes_text = False

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool

    async def embed(self, deployment: Deployment, request: EmbeddingRequest) -> Embeddings:
        raise EmbeddingUnsupported(
            deployment.id, "Anthropic's API has no embeddings: route embeddings to another model"
        )

    def stream(self, deployment: Deployment, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = build_body(deployment, request)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        headers.update(_auth(deployment))
        reader = SseReader(self._pool.max_frame)
        return relay(
            self._pool, deployment, "/v1/messages", body, headers, reader, _Decoder(deployment)
        )

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult:
        """`GET /v1/models` lists the models without generating anything."""
        return await probe_model_list(self._pool, deployment, "/v1/models", _auth(deployment), skip)


def _auth(deployment: Deployment) -> dict[str, str]:
    headers = {"anthropic-version": API_VERSION}
    if deployment.api_key:
        headers["x-api-key"] = deployment.api_key
    return headers


# ----- answers -----------------------------------------------------------------------------


class _Decoder:
    """Folds the named events of one answer; `message_stop` is the last frame."""

    __slots__ = ("_deployment", "_thinking", "_tools", "_usage")

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        # Content-block index -> [tool-call index, whether input fragments arrived].
        self._tools: dict[int, list[Any]] = {}
        # Content-block index -> [thinking text pieces, signature] of an open thinking block.
        self._thinking: dict[int, list[Any]] = {}
        self._usage: dict[str, int] = {}

    def fold(self, event: Event, draft: Draft) -> bool:
        name, data = event
        if name == "content_block_delta":
            frame = _decode(self._deployment, data)
            delta = frame.get("delta")
            if not isinstance(delta, dict):
                raise malformed(self._deployment, "content_block_delta", data)
            kind = delta.get("type")
            if kind == "text_delta":
                text = delta.get("text")
                if text:
                    draft.text.append(text)
            elif kind == "input_json_delta":
                partial = delta.get("partial_json")
                tool = self._tools.get(frame.get("index", -1))
                if tool is not None and partial:
                    tool[1] = True
                    draft.calls.append(ToolCall(arguments=partial, index=tool[0]))
            elif kind == "thinking_delta":
                thought = delta.get("thinking")
                block = self._thinking.get(frame.get("index", -1))
                if block is not None and isinstance(thought, str) and thought:
                    block[0].append(thought)
                    draft.reasoning.append(thought)
            elif kind == "signature_delta":
                block = self._thinking.get(frame.get("index", -1))
                if block is not None:
                    block[1] += str(delta.get("signature") or "")
            return False
        if name in ("ping", "content_block_stop"):
            if name == "content_block_stop":
                self._close_block(_decode(self._deployment, data), draft)
            return False
        frame = _decode(self._deployment, data)
        if name == "message_start":
            message = frame.get("message")
            if isinstance(message, dict):
                self._read_usage(message.get("usage"))
        elif name == "content_block_start":
            self._open_block(frame, draft)
        elif name == "message_delta":
            delta = frame.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                draft.finish = finish_reason(str(delta["stop_reason"]))
            self._read_usage(frame.get("usage"))
        elif name == "message_stop":
            draft.usage = self._final_usage()
            return True
        elif name == "error":
            raise stream_error(self._deployment, frame.get("error"))
        # Unknown events are new protocol features: the API says to ignore them.
        return False

    def end(self, draft: Draft, rest: bytes) -> Chunk:
        raise UpstreamMalformed(
            self._deployment.id, "SSE stream ended before the message_stop event"
        )

    def _open_block(self, frame: dict[str, Any], draft: Draft) -> None:
        block = frame.get("content_block")
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            self._thinking[frame.get("index", -1)] = [[], ""]
            return
        if kind == "redacted_thinking":
            # It arrives whole: no delta carries redacted data.
            assert isinstance(block, dict)
            draft.thinking.append(ThinkingBlock(redacted=str(block.get("data") or "")))
            return
        if not isinstance(block, dict) or kind != "tool_use":
            return
        index = len(self._tools)
        self._tools[frame.get("index", index)] = [index, False]
        draft.calls.append(
            ToolCall(id=str(block.get("id") or ""), name=str(block.get("name") or ""), index=index)
        )

    def _close_block(self, frame: dict[str, Any], draft: Draft) -> None:
        thinking = self._thinking.pop(frame.get("index", -1), None)
        if thinking is not None:
            draft.thinking.append(ThinkingBlock("".join(thinking[0]), thinking[1]))
            return
        tool = self._tools.get(frame.get("index", -1))
        if tool is not None and not tool[1]:
            # A call without arguments streams no fragment; OpenAI callers expect "{}".
            draft.calls.append(ToolCall(arguments="{}", index=tool[0]))

    def _read_usage(self, raw: object) -> None:
        if not isinstance(raw, dict):
            return
        # message_delta repeats the counts cumulatively: the latest figure replaces.
        for key, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self._usage[key] = value

    def _final_usage(self) -> Usage | None:
        usage = self._usage
        if not usage:
            return None
        read = usage.get("cache_read_input_tokens")
        written = usage.get("cache_creation_input_tokens")
        prompt = usage.get("input_tokens")
        if prompt is not None:
            prompt += (read or 0) + (written or 0)
        return Usage(prompt, usage.get("output_tokens"), read, written)


def finish_reason(stop_reason: str) -> str:
    return FINISH_REASONS.get(stop_reason, stop_reason)


def _decode(deployment: Deployment, data: bytes) -> dict[str, Any]:
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise malformed(deployment, "SSE event", data) from exc
    if not isinstance(frame, dict):
        raise malformed(deployment, "SSE event", data)
    return frame


def stream_error(deployment: Deployment, error: object) -> UpstreamError:
    """The error an `event: error` frame stands for, classified by its `type`."""
    kind = error.get("type") if isinstance(error, dict) else None
    problem = f"upstream reported {kind or 'an error'} mid-stream"
    if kind == "rate_limit_error":
        return UpstreamRateLimited(deployment.id, problem)
    if kind in _RETRYABLE_ERRORS or not isinstance(kind, str):
        return UpstreamUnavailable(deployment.id, problem)
    return UpstreamRejected(deployment.id, problem)


# ----- requests ----------------------------------------------------------------------------


def build_body(deployment: Deployment, request: ChatRequest) -> dict[str, Any]:
    params = request.params
    marks = _breakpoints(request.extra.get(CACHE_BREAKPOINTS))
    body: dict[str, Any] = {
        "model": deployment.upstream_model,
        "messages": _messages(request.messages, marks),
        "max_tokens": params.max_tokens or deployment.max_output_tokens or DEFAULT_MAX_TOKENS,
        "stream": True,
    }
    system = _system(request.messages, marks)
    if system:
        body["system"] = system
    body.update(deployment.extra_params)
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    extra = request.extra
    for key, value in extra.items():
        if key in _PASSTHROUGH:
            body[key] = value
    tools = extra.get("tools")
    if isinstance(tools, list) and tools:
        body["tools"] = [_tool(t) for t in tools]
        choice = _tool_choice(extra.get("tool_choice"), extra.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    return body


def _tool(tool: Any) -> Any:
    """An OpenAI function tool as an Anthropic tool; a native one as it is."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    function = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": function.get("name", ""),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: object, parallel: object) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None or choice == "auto":
        out = {"type": "auto"} if parallel is False else None
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    elif isinstance(choice, dict):
        out = dict(choice)  # already Anthropic's shape
    else:
        out = None
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _breakpoints(value: object) -> dict[int, Any]:
    """Canonical message index -> the cache_control to set on the last block sent for it
    (request.extra[CACHE_BREAKPOINTS])."""
    if not isinstance(value, list):
        return {}
    return {
        mark[0]: mark[1]
        for mark in value
        if isinstance(mark, list) and len(mark) == 2 and isinstance(mark[0], int)
    }


def _system(messages: tuple[Message, ...], marks: dict[int, Any]) -> str | list[dict[str, Any]]:
    """The system and developer messages, as one string, or as text blocks when one of
    them is a cache breakpoint (a marker needs a block to sit on)."""
    lifted = [(i, m) for i, m in enumerate(messages) if m.role in ("system", "developer")]
    if not any(i in marks for i, _ in lifted):
        return "\n\n".join(m.content for _, m in lifted)
    blocks = []
    for i, message in lifted:
        block = _text(message.content)
        if i in marks:
            block["cache_control"] = marks[i]
        blocks.append(block)
    return blocks


def _messages(messages: tuple[Message, ...], marks: dict[int, Any]) -> list[dict[str, Any]]:
    """User and assistant turns; consecutive ones of the same role merge into one,
    so that the results of parallel tool calls share the user turn that answers them."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if i in marks and blocks:
            if isinstance(blocks, str):
                blocks = [_text(blocks)]
            blocks[-1] = {**blocks[-1], "cache_control": marks[i]}
        if out and out[-1]["role"] == role:
            previous = out[-1]["content"]
            if isinstance(previous, str):
                previous = out[-1]["content"] = [{"type": "text", "text": previous}]
            previous.extend(blocks if isinstance(blocks, list) else [_text(blocks)])
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(message: Message) -> str | list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
        ]
    if not message.images and not message.tool_calls and not message.thinking:
        return message.content
    # Thinking blocks come first, exactly as the model gave them.
    blocks: list[dict[str, Any]] = [_thinking(block) for block in message.thinking]
    if message.content:
        blocks.append(_text(message.content))
    blocks.extend(_image(image) for image in message.images)
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
        for call in message.tool_calls
    )
    return blocks


def _thinking(block: ThinkingBlock) -> dict[str, Any]:
    if block.redacted:
        return {"type": "redacted_thinking", "data": block.redacted}
    return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _input(call: ToolCall) -> Any:
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _image(image: str) -> dict[str, Any]:
    if image.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": image}}
    media_type, data = "image/png", image
    if image.startswith("data:"):
        header, _, data = image.partition(",")
        media_type = header[5:].split(";", 1)[0] or media_type
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
