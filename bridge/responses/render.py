"""Canonical answers -> OpenAI Response objects and the Responses stream's events.

Output items follow the answer: the model's reasoning, when it thinks aloud, is a
`reasoning` item with one `reasoning_text` part (no summary, no encrypted content:
nothing to send back), its text one `message` item with one `output_text` part,
each tool call a `function_call` item (`call_id` is the id the
caller answers with; the item's own id is `fc_...`). A finish at the output cap or
a content filter makes the response `incomplete`, with the reason.

The stream is `response.created`, `response.in_progress`, then per item
`response.output_item.added`, its deltas (`response.content_part.added`,
`response.output_text.delta`... or `response.reasoning_text.delta`... or
`response.function_call_arguments.delta`...),
its `.done` events and `response.output_item.done`, then `response.completed` (or
`response.incomplete`) with the whole Response and its usage. Every event carries
its `sequence_number`. A failure after the stream began ends it with
`response.failed`. Text deltas are rendered around byte templates built when their
item opens.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from bridge.errors import HttpError
from sidecar.types import ChatResponse, Chunk, ToolCall, Usage

_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseShell:
    """The fields of one Response that do not depend on its answer."""

    __slots__ = ("_fields", "key")

    def __init__(self, key: str, created: int, model: str, echo: dict[str, Any]) -> None:
        self.key = key  # the request id, which the ids of the response and its items carry
        self._fields = {
            "id": f"resp_{key}",
            "object": "response",
            "created_at": created,
            "model": model,
            "tools": [],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            **echo,
            "previous_response_id": None,
            # Nothing is kept, whatever the request's `store` said.
            "store": False,
            "truncation": "disabled",
            "error": None,
            "incomplete_details": None,
        }

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None,
        finish: str | None = None,
        error: HttpError | None = None,
    ) -> dict[str, Any]:
        out = {**self._fields, "status": status, "output": output, "usage": None}
        if status != "in_progress":
            out["usage"] = usage_object(usage)
        reason = _INCOMPLETE.get(finish or "")
        if reason is not None and status == "incomplete":
            out["incomplete_details"] = {"reason": reason}
        if error is not None:
            out["error"] = {"code": error.code or error.type, "message": error.message}
        return out


def status_of(finish: str | None) -> str:
    return "incomplete" if (finish or "") in _INCOMPLETE else "completed"


def usage_object(usage: Usage | None) -> dict[str, Any]:
    """The Responses API's usage: input_tokens include the cached ones."""
    prompt = (usage.prompt_tokens if usage else None) or 0
    completion = (usage.completion_tokens if usage else None) or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": (usage.cached_tokens if usage else None) or 0,
            "cache_write_tokens": (usage.cache_write_tokens if usage else None) or 0,
        },
        "output_tokens": completion,
        # Canonical usage does not split reasoning tokens out of the output.
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_body(shell: ResponseShell, answer: ChatResponse) -> bytes:
    output: list[dict[str, Any]] = []
    key = shell.key
    if answer.reasoning:
        output.append(_reasoning_item(f"rs_{key}_0", answer.reasoning, "completed"))
    if answer.content:
        output.append(_message_item(f"msg_{key}_{len(output)}", answer.content, "completed"))
    output.extend(
        _call_item(f"fc_{key}_{call.index}", call, call.arguments or "{}", "completed")
        for call in answer.tool_calls
    )
    finish = answer.finish_reason
    return orjson.dumps(shell.response(status_of(finish), output, answer.usage, finish))


class ResponsesStream:
    """Renders one streamed answer as the Responses API's events, numbered in order."""

    __slots__ = (
        "_calls",
        "_finish",
        "_open",
        "_output",
        "_seq",
        "_shell",
        "_text",
        "_text_head",
        "_usage",
    )

    def __init__(self, shell: ResponseShell) -> None:
        self._shell = shell
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # items done, in order
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text: list[str] = []  # the open message item's text
        self._text_head = b""
        # Tool-call index -> [output index, item id, call id, name, argument pieces].
        self._calls: dict[int, list[Any]] = {}
        self._finish: str | None = None
        self._usage: Usage | None = None

    def first(self, chunk: Chunk) -> bytes:
        created = self._shell.response("in_progress", [], None)
        return (
            self._event("response.created", {"response": created})
            + self._event("response.in_progress", {"response": created})
            + self.chunk(chunk)
        )

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.reasoning:
            out += self._text_delta("reasoning", chunk.reasoning)
        if chunk.content:
            out += self._text_delta("message", chunk.content)
        for call in chunk.tool_calls:
            out += self._call(call)
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        return out

    def end(self) -> bytes:
        out = self._close()
        status = status_of(self._finish)
        response = self._shell.response(status, self._output, self._usage, self._finish)
        return out + self._event(f"response.{status}", {"response": response})

    def failed(self, err: HttpError) -> bytes:
        response = self._shell.response("failed", self._output, self._usage, error=err)
        return self._event("response.failed", {"response": response})

    # -- items -------------------------------------------------------------------------------

    def _text_delta(self, kind: str, text: str) -> bytes:
        """A piece of the answer's text, or of its reasoning, in an item of that kind."""
        out = b""
        if self._open is None or self._open["type"] != kind:
            out = self._open_text(kind)
        self._text.append(text)
        self._seq += 1
        return (
            out
            + self._text_head
            + str(self._seq - 1).encode()
            + b',"delta":'
            + orjson.dumps(text)
            + b"}\n\n"
        )

    def _open_text(self, kind: str) -> bytes:
        out = self._close()
        index = len(self._output)
        if kind == "message":
            item_id = f"msg_{self._shell.key}_{index}"
            self._open = {**_message_item(item_id, "", "in_progress"), "content": []}
            event, extra = b"response.output_text.delta", b',"logprobs":[]'
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        else:
            item_id = f"rs_{self._shell.key}_{index}"
            self._open = {**_reasoning_item(item_id, "", "in_progress"), "content": []}
            event, extra = b"response.reasoning_text.delta", b""
            part = {"type": "reasoning_text", "text": ""}
        self._text = []
        self._text_head = (
            b"event: "
            + event
            + b'\ndata: {"type":"'
            + event
            + b'","item_id":'
            + orjson.dumps(item_id)
            + b',"output_index":'
            + str(index).encode()
            + b',"content_index":0'
            + extra
            + b',"sequence_number":'
        )
        return (
            out
            + self._event("response.output_item.added", {"output_index": index, "item": self._open})
            + self._event(
                "response.content_part.added",
                {"item_id": item_id, "output_index": index, "content_index": 0, "part": part},
            )
        )

    def _call(self, call: ToolCall) -> bytes:
        out = b""
        state = self._calls.get(call.index)
        if state is None:
            out += self._close()
            index = len(self._output)
            item_id = f"fc_{self._shell.key}_{call.index}"
            call_id = call.id or f"call_{call.index}"
            state = self._calls[call.index] = [index, item_id, call_id, call.name, []]
            self._open = _call_item(item_id, call, "", "in_progress")
            self._open["call_id"] = call_id
            out += self._event(
                "response.output_item.added", {"output_index": index, "item": self._open}
            )
        if call.arguments:
            state[4].append(call.arguments)
            delta = {"item_id": state[1], "output_index": state[0], "delta": call.arguments}
            out += self._event("response.function_call_arguments.delta", delta)
        return out

    def _close(self) -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        index = len(self._output)
        out = b""
        if item["type"] == "message":
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**where, "part": part})
            item = _message_item(item["id"], text, "completed")
        elif item["type"] == "reasoning":
            text = "".join(self._text)
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += self._event("response.reasoning_text.done", {**where, "text": text})
            reasoning_part = {"type": "reasoning_text", "text": text}
            out += self._event("response.content_part.done", {**where, "part": reasoning_part})
            item = _reasoning_item(item["id"], text, "completed")
        else:
            state = next(s for s in self._calls.values() if s[1] == item["id"])
            arguments = "".join(state[4]) or "{}"
            done = {
                "item_id": item["id"],
                "output_index": index,
                "name": state[3],
                "arguments": arguments,
            }
            out += self._event("response.function_call_arguments.done", done)
            item = {**item, "arguments": arguments, "status": "completed"}
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """The model's reasoning as text; no summary, and no encrypted content to send back."""
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(item_id: str, call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id or f"call_{call.index}",
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }
