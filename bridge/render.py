"""Canonical answers -> OpenAI response bodies and SSE frames (OpenAI's API reference:
chat.completion, chat.completion.chunk, and its error shape).

The stream writer builds each `chat.completion.chunk` from two constant byte
strings around the delta, computed once per stream, so a relayed token costs one
small orjson call and a join. `model` is always the alias the caller asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from bridge.errors import HttpError
from sidecar.types import (
    BudgetStatus,
    ChatResponse,
    Chunk,
    DeploymentStatus,
    ModelStatus,
    ThinkingBlock,
    ToolCall,
    Usage,
    merge_tool_calls,
)

DONE: Final = b"data: [DONE]\n\n"
_ROLE_DELTA: Final = b'{"role":"assistant","content":""}'
OWNER: Final = "llm-sidecar"
# Health states in which a deployment takes calls (a half-open one takes its probe call).
_SERVING: Final = frozenset({"up", "cold", "half_open", "unknown"})


class StreamWriter:
    """Renders the chunks of one streamed answer, in order, as SSE bytes."""

    __slots__ = ("_head", "_include_usage", "_prefix", "_tail", "_usage")

    def __init__(self, response_id: str, created: int, model: str, include_usage: bool) -> None:
        self._prefix = (
            b'data: {"id":'
            + orjson.dumps(response_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(model)
        )
        self._head = self._prefix + b',"choices":[{"index":0,"delta":'
        usage = b',"usage":null' if include_usage else b""
        self._tail = b',"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n"
        self._include_usage = include_usage
        self._usage: Usage | None = None

    def first(self, chunk: Chunk) -> bytes:
        """The role frame OpenAI opens every stream with, then the first chunk."""
        return self._head + _ROLE_DELTA + self._tail + self.chunk(chunk)

    def chunk(self, chunk: Chunk) -> bytes:
        content = chunk.content
        calls = chunk.tool_calls
        if chunk.reasoning or chunk.thinking:
            frames = self._head + orjson.dumps(_thinking_delta(chunk)) + self._tail
        elif calls:
            if len(calls) > 1:
                # Fragments coalesced into one chunk become one entry per call, as OpenAI sends.
                calls = merge_tool_calls(calls)
            delta: dict[str, Any] = {"content": content} if content else {}
            delta["tool_calls"] = [_call_delta(c) for c in calls]
            frames = self._head + orjson.dumps(delta) + self._tail
        elif content:
            frames = self._head + b'{"content":' + orjson.dumps(content) + b"}" + self._tail
        else:
            frames = b""
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason:
            frames += self._finish(chunk.finish_reason)
        return frames

    def end(self) -> bytes:
        """The usage frame when the caller asked for it, then [DONE]."""
        if not self._include_usage:
            return DONE
        usage = orjson.dumps(usage_object(self._usage))
        return self._prefix + b',"choices":[],"usage":' + usage + b"}\n\n" + DONE

    def failed(self, err: HttpError) -> bytes:
        return error_frame(err.payload())

    def _finish(self, reason: str) -> bytes:
        usage = b',"usage":null' if self._include_usage else b""
        return (
            self._head
            + b'{},"logprobs":null,"finish_reason":'
            + orjson.dumps(reason)
            + b"}]"
            + usage
            + b"}\n\n"
        )


def _thinking_delta(chunk: Chunk) -> dict[str, Any]:
    """A delta of a thinking model, the way LiteLLM's proxy and the OpenAI-compatible
    servers of reasoning models send it: `reasoning_content` text, and whole
    `thinking_blocks` (with their signatures) for the caller to send back."""
    delta: dict[str, Any] = {}
    if chunk.content:
        delta["content"] = chunk.content
    if chunk.reasoning:
        delta["reasoning_content"] = chunk.reasoning
    if chunk.thinking:
        delta["thinking_blocks"] = [thinking_block(b) for b in chunk.thinking]
    calls = chunk.tool_calls
    if calls:
        calls = merge_tool_calls(calls) if len(calls) > 1 else calls
        delta["tool_calls"] = [_call_delta(c) for c in calls]
    return delta


def thinking_block(block: ThinkingBlock) -> dict[str, str]:
    if block.redacted:
        return {"type": "redacted_thinking", "data": block.redacted}
    return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}


def error_frame(payload: dict[str, Any]) -> bytes:
    """The event that ends a stream which failed after it started (no [DONE] follows)."""
    return b"data: " + orjson.dumps({"error": payload}) + b"\n\n"


def completion_body(response_id: str, created: int, model: str, answer: ChatResponse) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [_call(c) for c in answer.tool_calls]
        message["content"] = answer.content or None
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.thinking:
        message["thinking_blocks"] = [thinking_block(b) for b in answer.thinking]
    return orjson.dumps(
        {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason or "stop",
                }
            ],
            "usage": usage_object(answer.usage),
        }
    )


def usage_object(usage: Usage | None) -> dict[str, Any]:
    """OpenAI's usage; a count the upstream did not report is given as 0.

    Cached prompt tokens go where OpenAI reports them (`prompt_tokens_details.cached_tokens`,
    included in prompt_tokens); tokens written to a cache have no OpenAI field and take
    Anthropic's name, `cache_creation_input_tokens`, as LiteLLM's proxy reports them.
    """
    prompt = (usage.prompt_tokens if usage else None) or 0
    completion = (usage.completion_tokens if usage else None) or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if usage is not None and usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage is not None and usage.cache_write_tokens is not None:
        out["cache_creation_input_tokens"] = usage.cache_write_tokens
    return out


def models_body(models: Iterable[ModelStatus], created: int) -> bytes:
    """OpenAI's model list, with the paging fields of Anthropic's (one page: every alias),
    so that clients of either protocol read it."""
    data = [model_object(m, created) for m in models]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def model_object(model: ModelStatus, created: int) -> dict[str, Any]:
    """OpenAI's Model object (and Anthropic's ModelInfo) plus where the alias runs, for
    dropdowns and dashboards."""
    out: dict[str, Any] = {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        # Anthropic's ModelInfo fields, for the clients of the Messages door.
        "type": "model",
        "display_name": model.name,
        "created_at": _iso(created),
        "locality": model.locality,
        "simulated": model.simulated,
        "description": model.description,
        "deployments": len(model.deployments),
    }
    if model.via:
        out["routes_to"] = [m.name for m in model.via]
    return out


def health_body(
    mode: str, models: Sequence[ModelStatus], budgets: Sequence[BudgetStatus] = ()
) -> bytes:
    """Every deployment as the sidecar knows it, and every spend cap's headroom; no
    upstream is called to build this."""
    deployments = [_deployment_health(m, d) for m in models for d in m.deployments]
    healthy = sum(d["status"] in _SERVING for d in deployments)
    return orjson.dumps(
        {
            "status": "ok" if healthy == len(deployments) else "degraded" if healthy else "down",
            "mode": mode,
            "models": len(models),
            "simulated": any(m.simulated for m in models),
            "healthy_count": healthy,
            "unhealthy_count": len(deployments) - healthy,
            "deployments": deployments,
            "budgets": [_budget(b) for b in budgets],
        }
    )


def _budget(b: BudgetStatus) -> dict[str, Any]:
    return {
        "budget": b.budget,
        "max_budget": b.cap,
        "spend": b.spent,
        "reserved": b.reserved,
        "remaining": b.remaining,
        "budget_duration": b.duration,
        "budget_reset_at": None if b.resets_at is None else _iso(b.resets_at),
    }


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _deployment_health(model: ModelStatus, d: DeploymentStatus) -> dict[str, Any]:
    h = d.health
    out: dict[str, Any] = {
        "deployment": d.id,
        "model": model.name,
        "provider": d.provider,
        "upstream_model": d.upstream_model,
        "locality": d.locality.value,
        "api_base": d.api_base,
        "context_window": d.context_window,
        "simulated": d.simulated,
        "status": h.state if h is not None else "unknown",
    }
    if h is not None:
        out.update(
            reason=h.reason,
            in_flight=h.in_flight,
            ttft_ms=h.ttft_ms,
            cooldown_seconds=h.cooldown_seconds,
            last_error=h.last_error,
            probes_not_offered=list(h.probes_not_offered),
        )
    return out


def _call_delta(call: ToolCall) -> dict[str, Any]:
    if call.id or call.name:
        return {
            "index": call.index,
            "id": call.id or f"call_{call.index}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
    return {"index": call.index, "function": {"arguments": call.arguments}}


def _call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id or f"call_{call.index}",
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments or "{}"},
    }
