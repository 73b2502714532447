"""Canonical answers -> Anthropic Message objects, SSE events and errors.

The stream encoder turns the canonical chunks into Anthropic's event sequence:
`message_start`, then per content block `content_block_start`, deltas and
`content_block_stop` (a `ping` after the first block opens, as the API sends one),
then `message_delta` with the stop reason and the usage, and `message_stop`.
Blocks follow the answer: reasoning opens a thinking block, text a text block,
each new tool call a tool_use block; whatever is open closes when another kind
starts. A thinking block that arrives whole with its signature (Claude's) closes
the open thinking block with a `signature_delta`, so the client can send it back
exactly. Text deltas are rendered around byte templates built when the block opens.

Usage comes at the end of a canonical stream, so `message_start` reports zeros and
`message_delta` the whole usage, which Anthropic's clients read cumulatively.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from bridge.errors import HttpError
from sidecar.types import ChatResponse, Chunk, ThinkingBlock, ToolCall, Usage

PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
# Canonical finish reasons -> Anthropic stop reasons; Anthropic's own names (which the
# Anthropic provider passes on when it has no counterpart, pause_turn among them) stay.
_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_ANTHROPIC_REASONS: Final = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    }
)
# HTTP status -> Anthropic error type (docs.claude.com/en/api/errors).
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def stop_reason(finish: str | None, called: bool) -> str:
    if called and finish in (None, "stop", "tool_calls"):
        # Some local servers finish a tool-calling turn with "stop".
        return "tool_use"
    if finish in _ANTHROPIC_REASONS:
        return finish
    return _STOP_REASONS.get(finish or "stop", "end_turn")


def usage_object(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage: input_tokens leaves out the tokens read from or written to
    the prompt cache, which the canonical prompt count includes."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    read = usage.cached_tokens or 0
    written = usage.cache_write_tokens or 0
    return {
        "input_tokens": max(0, (usage.prompt_tokens or 0) - read - written),
        "output_tokens": usage.completion_tokens or 0,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def message_body(message_id: str, model: str, answer: ChatResponse) -> bytes:
    content: list[dict[str, Any]] = [_thinking(b) for b in answer.thinking]
    if answer.reasoning and not answer.thinking:
        # A model that thinks aloud without signing (a local one): unsigned thinking.
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
    if answer.content:
        content.append({"type": "text", "text": answer.content})
    content.extend(
        {"type": "tool_use", "id": _call_id(c), "name": c.name, "input": _input(c.arguments)}
        for c in answer.tool_calls
    )
    return orjson.dumps(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(answer.finish_reason, bool(answer.tool_calls)),
            "stop_sequence": None,
            "usage": usage_object(answer.usage),
        }
    )


def error_shape(err: HttpError) -> tuple[int, bytes]:
    """Anthropic's error body. The sidecar's 503 (no deployment can serve now) is
    Anthropic's 529 overloaded_error, which its clients retry and fail over on; a spend
    cap with no room is Anthropic's spend-limit 429 (`enforced_spend_limit_reached`),
    which its SDK raises as its own class."""
    status = 529 if err.status == 503 else err.status
    error: dict[str, Any] = _error(status, err.message)
    if err.type == "budget_exceeded":
        error["details"] = {"error_code": "enforced_spend_limit_reached"}
    return status, orjson.dumps({"type": "error", "error": error})


def _error(status: int, message: str) -> dict[str, str]:
    kind = _ERROR_TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": kind, "message": message}


class MessagesStream:
    """Renders one streamed answer as Anthropic's named SSE events."""

    __slots__ = (
        "_called",
        "_delta_head",
        "_finish",
        "_index",
        "_message_id",
        "_model",
        "_open",
        "_thought",
        "_tools",
        "_usage",
    )

    def __init__(self, message_id: str, model: str) -> None:
        self._message_id = message_id
        self._model = model
        self._index = -1  # the open (or last) content block
        self._open = ""  # its kind: "text", "thinking", "tool_use", or "" when none is open
        self._delta_head = b""  # `content_block_delta` up to the open block's delta
        self._thought: list[str] = []  # reasoning streamed into the open thinking block
        self._tools: dict[int, int] = {}  # tool-call index -> its block's index
        self._called = False
        self._finish: str | None = None
        self._usage: Usage | None = None

    def first(self, chunk: Chunk) -> bytes:
        start = {
            "type": "message_start",
            "message": {
                "id": self._message_id,
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }
        return _event(b"message_start", start) + self.chunk(chunk)

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.thinking or chunk.reasoning:
            out = self._thinking(chunk.reasoning, chunk.thinking)
        if chunk.content:
            if self._open != "text":
                out += self._start({"type": "text", "text": ""}, "text")
                self._delta_head = self._head(b'{"type":"text_delta","text":')
            out += self._delta_head + orjson.dumps(chunk.content) + b"}}\n\n"
        if chunk.tool_calls:
            out += self._calls(chunk.tool_calls)
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        return out

    def end(self) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(self._finish, self._called),
                "stop_sequence": None,
            },
            "usage": usage_object(self._usage),
        }
        return (
            self._stop()
            + _event(b"message_delta", delta)
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    def failed(self, err: HttpError) -> bytes:
        """Anthropic's mid-stream error event; no message_stop follows."""
        status = error_shape(err)[0]
        return _event(b"error", {"type": "error", "error": _error(status, err.message)})

    # -- blocks ----------------------------------------------------------------------------

    def _thinking(self, reasoning: str, signed: tuple[ThinkingBlock, ...]) -> bytes:
        out = b""
        rest = reasoning
        for block in signed:
            if block.redacted:
                out += self._start({"type": "redacted_thinking", "data": block.redacted}, "")
                continue
            # The streamed text is this block's beginning; the chunk's reasoning holds
            # the rest of it, then perhaps the beginning of the next block.
            streamed = "".join(self._thought) if self._open == "thinking" else ""
            remainder = block.thinking[len(streamed) :]
            if self._open != "thinking":
                out += self._open_thinking()
            if remainder:
                out += self._thought_delta(remainder)
            rest = rest[len(remainder) :] if rest.startswith(remainder) else ""
            signature = {"type": "signature_delta", "signature": block.signature}
            out += self._head(b"") + orjson.dumps(signature) + b"}\n\n"
            out += self._stop()
        if rest:
            if self._open != "thinking":
                out += self._open_thinking()
            out += self._thought_delta(rest)
        return out

    def _open_thinking(self) -> bytes:
        out = self._start({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
        self._delta_head = self._head(b'{"type":"thinking_delta","thinking":')
        self._thought = []
        return out

    def _thought_delta(self, text: str) -> bytes:
        self._thought.append(text)
        return self._delta_head + orjson.dumps(text) + b"}}\n\n"

    def _calls(self, calls: tuple[ToolCall, ...]) -> bytes:
        out = b""
        for call in calls:
            block = self._tools.get(call.index)
            if block is None:
                self._called = True
                tool = {"type": "tool_use", "id": _call_id(call), "name": call.name, "input": {}}
                out += self._start(tool, "tool_use")
                self._tools[call.index] = block = self._index
            if call.arguments:
                delta = {"type": "input_json_delta", "partial_json": call.arguments}
                out += (
                    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                    + str(block).encode()
                    + b',"delta":'
                    + orjson.dumps(delta)
                    + b"}\n\n"
                )
        return out

    def _start(self, block: dict[str, Any], kind: str) -> bytes:
        """Close the open block and open the next; a block opened whole (redacted
        thinking) closes at once."""
        out = self._stop()
        self._index += 1
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        out += _event(b"content_block_start", start)
        if self._index == 0:
            out += PING
        if kind:
            self._open = kind
        else:
            out += self._stop_event()
        return out

    def _stop(self) -> bytes:
        if not self._open:
            return b""
        self._open = ""
        return self._stop_event()

    def _stop_event(self) -> bytes:
        stop = b'{"type":"content_block_stop","index":' + str(self._index).encode() + b"}"
        return b"event: content_block_stop\ndata: " + stop + b"\n\n"

    def _head(self, delta_start: bytes) -> bytes:
        return (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(self._index).encode()
            + b',"delta":'
            + delta_start
        )


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _thinking(block: ThinkingBlock) -> dict[str, str]:
    if block.redacted:
        return {"type": "redacted_thinking", "data": block.redacted}
    return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}


def _call_id(call: ToolCall) -> str:
    return call.id or f"toolu_{call.index}"


def _input(arguments: str) -> Any:
    """A tool call's input as the object Anthropic sends; arguments that are not a JSON
    object (a truncated call) are given under `_raw`, never dropped."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}
