"""Replies as Ollama writes them: NDJSON lines, whole replies, model listings.

A stream is one JSON object per line: `{"model", "created_at", "message": {...},
"done": false}` for `/api/chat` (`"response"` instead of `"message"` for
`/api/generate`), ending with the `done: true` line that carries `done_reason` and
the counts and durations (nanoseconds). Ollama sends a tool call whole, in one line,
so streamed fragments are gathered and sent complete before the done line. Text
goes out as it arrives: nothing else is held back.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from sidecar.types import (
    Chunk,
    DeploymentStatus,
    HealthStatus,
    ModelStatus,
    ToolCall,
    Usage,
    merge_tool_calls,
)

# What /api/version reports: the Ollama API this door speaks.
OLLAMA_VERSION: Final = "0.13.0"
_NEWLINE: Final = b"\n"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def done_reason(finish: str | None) -> str:
    """Ollama says "stop" after tool calls and at a natural end, "length" when cut off."""
    return "length" if finish == "length" else "stop"


def ollama_calls(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls as Ollama writes them: arguments as a JSON object, not a string."""
    out = []
    for call in calls:
        try:
            arguments = orjson.loads(call.arguments) if call.arguments else {}
        except orjson.JSONDecodeError:
            arguments = {}
        function = {"index": call.index, "name": call.name, "arguments": arguments}
        out.append({"id": call.id, "function": function})
    return out


class Timing:
    """The durations of one call, in nanoseconds, as the done line reports them."""

    __slots__ = ("first", "started")

    def __init__(self) -> None:
        self.started = time.monotonic_ns()
        self.first = 0

    def counts(self, usage: Usage | None) -> dict[str, Any]:
        now = time.monotonic_ns()
        first = self.first or now
        out: dict[str, Any] = {
            "total_duration": now - self.started,
            "load_duration": 0,
        }
        if usage is not None and usage.prompt_tokens is not None:
            out["prompt_eval_count"] = usage.prompt_tokens
        out["prompt_eval_duration"] = first - self.started
        if usage is not None and usage.completion_tokens is not None:
            out["eval_count"] = usage.completion_tokens
        out["eval_duration"] = now - first
        return out


class LineWriter:
    """One streamed answer as NDJSON lines; `generate` writes /api/generate's shape.

    A line of text is spliced from constant bytes around its timestamp and text,
    computed once per stream, so a relayed token costs two small orjson calls.
    """

    __slots__ = ("_calls", "_finish", "_generate", "_head", "_model", "_said", "_usage", "timing")

    def __init__(self, model: str, *, generate: bool) -> None:
        self._model = model
        self._generate = generate
        self._calls: list[ToolCall] = []
        self._finish: str | None = None
        self._usage: Usage | None = None
        self.timing = Timing()
        self._head = b'{"model":' + orjson.dumps(model) + b',"created_at":'
        self._said = b',"response":' if generate else b',"message":{"role":"assistant","content":'

    def chunk(self, chunk: Chunk) -> bytes:
        """The line for a chunk; b"" when it carries nothing to show yet."""
        if chunk.tool_calls:
            self._calls.extend(chunk.tool_calls)
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if not (chunk.content or chunk.reasoning):
            return b""
        if not self.timing.first:
            self.timing.first = time.monotonic_ns()
        if chunk.reasoning:
            return self._line(chunk.content, chunk.reasoning, (), done=False)
        close = b',"done":false}\n' if self._generate else b'},"done":false}\n'
        stamp = orjson.dumps(now_rfc3339())
        return self._head + stamp + self._said + orjson.dumps(chunk.content) + close

    def end(self) -> bytes:
        """The tool calls, if any, then the done line."""
        lines = b""
        if self._calls:
            lines = self._line("", "", merge_tool_calls(self._calls), done=False)
        return lines + self._line("", "", (), done=True)

    def _line(self, text: str, reasoning: str, calls: tuple[ToolCall, ...], *, done: bool) -> bytes:
        out = _said(self._model, self._generate, text, reasoning, calls)
        out["done"] = done
        if done:
            out["done_reason"] = done_reason(self._finish)
            out.update(self.timing.counts(self._usage))
        return orjson.dumps(out) + _NEWLINE


def whole_reply(
    model: str,
    *,
    generate: bool,
    text: str,
    reasoning: str,
    calls: tuple[ToolCall, ...],
    finish: str,
    usage: Usage,
    timing: Timing,
) -> bytes:
    """A `stream: false` reply: one object shaped like the done line, with everything."""
    out = _said(model, generate, text, reasoning, calls)
    out["done"] = True
    out["done_reason"] = done_reason(finish)
    out.update(timing.counts(usage))
    return orjson.dumps(out)


def _said(
    model: str, generate: bool, text: str, reasoning: str, calls: tuple[ToolCall, ...]
) -> dict[str, Any]:
    """A line's model, time and what it says: `response` for generate, else `message`."""
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if generate:
        out["response"] = text
        if reasoning:
            out["thinking"] = reasoning
        return out
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning:
        message["thinking"] = reasoning
    if calls:
        message["tool_calls"] = ollama_calls(calls)
    out["message"] = message
    return out


def load_reply(model: str, *, generate: bool) -> bytes:
    """The answer to an empty chat or prompt: Ollama loads the model and says so."""
    out = _said(model, generate, "", "", ())
    out.update(done=True, done_reason="load")
    return orjson.dumps(out)


def error_line(message: str) -> bytes:
    """A failure after the stream began: Ollama's last line, with no `done`."""
    return orjson.dumps({"error": message}) + _NEWLINE


# -- models ----------------------------------------------------------------------------


def listed_name(alias: str) -> str:
    """An alias as Ollama lists a model: with a tag, `:latest` when it has none."""
    return alias if ":" in alias.rpartition("/")[2] else f"{alias}:latest"


def _reached(model: ModelStatus) -> tuple[DeploymentStatus, ...]:
    """The deployments an alias may answer from, its own or (auto) those it routes to."""
    return model.deployments + tuple(d for m in model.via for d in m.deployments)


def _details(model: ModelStatus) -> dict[str, Any]:
    providers = sorted({d.provider for d in _reached(model)})
    return {
        "parent_model": "",
        "format": "",
        "family": providers[0] if providers else "router",
        "families": providers or ["router"],
        "parameter_size": "",
        "quantization_level": "",
    }


def _digest(alias: str) -> str:
    return hashlib.sha256(alias.encode()).hexdigest()


def _context(model: ModelStatus) -> int | None:
    windows = [d.context_window for d in _reached(model) if d.context_window]
    return min(windows) if windows else None


def tags_body(models: Iterable[ModelStatus], modified: str) -> bytes:
    """`/api/tags`: every alias as an installed model."""
    listed = []
    for model in models:
        name = listed_name(model.name)
        listed.append(
            {
                "name": name,
                "model": name,
                "modified_at": modified,
                "size": 0,
                "digest": _digest(model.name),
                "details": _details(model),
            }
        )
    return orjson.dumps({"models": listed})


def ps_body(models: Iterable[ModelStatus], expires: str) -> bytes:
    """`/api/ps`: the aliases with a deployment that can answer now, as loaded models."""
    loaded = []
    for model in models:
        if not any(_serving(d.health) for d in _reached(model)):
            continue
        name = listed_name(model.name)
        entry: dict[str, Any] = {
            "name": name,
            "model": name,
            "size": 0,
            "digest": _digest(model.name),
            "details": _details(model),
            "expires_at": expires,
            "size_vram": 0,
        }
        window = _context(model)
        if window is not None:
            entry["context_length"] = window
        loaded.append(entry)
    return orjson.dumps({"models": loaded})


def _serving(health: HealthStatus | None) -> bool:
    return health is None or health.state in ("up", "cold", "half_open")


def show_body(model: ModelStatus, modified: str) -> bytes:
    """`/api/show`: what a client checks before using a model (capabilities, context)."""
    window = _context(model)
    info: dict[str, Any] = {"general.architecture": "router"}
    if window is not None:
        info["router.context_length"] = window
    description = model.description or f"llm-sidecar alias {model.name} ({model.locality})"
    return orjson.dumps(
        {
            "modelfile": f"# {description}\nFROM {model.name}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": _details(model),
            "model_info": info,
            "capabilities": ["completion", "tools", "embedding"],
            "modified_at": modified,
        }
    )
