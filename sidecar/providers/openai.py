"""OpenAI-compatible chat: POST {api_base}/chat/completions, answered as SSE; and
embeddings: POST {api_base}/embeddings.

Serves OpenAI itself and the servers that copy its API (vLLM, llama.cpp's
server, Ollama's /v1). Usage is always requested upstream
(`stream_options.include_usage`), so spend and token counts are known even
when the caller did not ask for them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import orjson

from sidecar.config.model import Deployment
from sidecar.errors import UpstreamError, UpstreamMalformed, UpstreamUnavailable
from sidecar.providers.base import ProbeResult
from sidecar.providers.embedding import count, vectors_from
from sidecar.providers.http import (
    HttpPool,
    malformed,
    post_json,
    probe_model_list,
    upstream_text,
)
from sidecar.providers.relay import Draft, relay
from sidecar.providers.sse import Event, SseReader
from sidecar.types import (
    CACHE_BREAKPOINTS,
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    Embeddings,
    Message,
    ToolCall,
    Usage,
)

_DONE = b"[DONE]"
# Request fields the caller may pass through `extra`; everything else there is
# provider-specific and forwarded too, except keys that would break the stream and
# the prompt-cache breakpoints of the Messages door's callers, which are Claude's alone.
_RESERVED = frozenset({"model", "messages", "stream", "stream_options", "n", CACHE_BREAKPOINTS})


class OpenAIProvider:
    completes_text = True  # the legacy /completions endpoint

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool

    def stream(self, deployment: Deployment, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = build_body(deployment, request)
        path = "/chat/completions"
        if request.completion:
            path = "/completions"
            del body["messages"]
            body["prompt"] = "".join(m.content for m in request.messages if m.role == "user")
            if "max_completion_tokens" in body:  # a chat-only name
                body["max_tokens"] = body.pop("max_completion_tokens")
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        headers.update(_auth(deployment))
        reader = SseReader(self._pool.max_frame)
        decoder = _Decoder(deployment, text=request.completion)
        return relay(self._pool, deployment, path, body, headers, reader, decoder)

    async def embed(self, deployment: Deployment, request: EmbeddingRequest) -> Embeddings:
        """`POST /embeddings` with the whole batch, as floats; token ids pass through."""
        body: dict[str, Any] = {
            "model": deployment.upstream_model,
            "input": [item if isinstance(item, str) else list(item) for item in request.inputs],
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        headers = {"Content-Type": "application/json", **_auth(deployment)}
        reply = await post_json(self._pool, deployment, "/embeddings", body, headers)
        data = reply.get("data")
        if isinstance(data, list) and all(isinstance(item, dict) for item in data):
            # The answer's items carry their input's index; OpenAI keeps them in order,
            # compatible servers need not.
            data = sorted(data, key=_index)
            raw = [item.get("embedding") for item in data]
        else:
            raw = None
        vectors = vectors_from(deployment, raw, len(request.inputs), "/embeddings reply")
        usage = reply.get("usage")
        prompt = count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
        return Embeddings(vectors, Usage(prompt, 0))

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult:
        """`GET /models` answers without generating anything, so it costs no tokens.

        A server that does not offer it (404/405/501) says so in `not_offered`; the
        caller passes it back in `skip` and there is nothing left to probe.
        """
        return await probe_model_list(self._pool, deployment, "/models", _auth(deployment), skip)


def _index(item: dict[str, Any]) -> int:
    index = item.get("index")
    return index if isinstance(index, int) else 0


def _auth(deployment: Deployment) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployment.api_key}"} if deployment.api_key else {}


class _Decoder:
    """Folds chat.completion.chunk events. The last frame is `[DONE]` or, for servers
    that never send it, the usage chunk that follows the finish (usage is always
    requested), or a finish chunk that carries the usage itself."""

    __slots__ = ("_deployment", "_text")

    def __init__(self, deployment: Deployment, *, text: bool = False) -> None:
        self._deployment = deployment
        self._text = text  # text_completion frames: choices[0].text, not a delta

    def fold(self, event: Event, draft: Draft) -> bool:
        data = event[1]
        if data == _DONE:
            return True
        deployment = self._deployment
        frame = _decode(deployment, data)
        if self._text:
            finish = _apply_text_frame(deployment, frame, draft.text)
        else:
            finish = _apply_frame(deployment, frame, draft.text, draft.calls)
        if finish is not None:
            draft.finish = finish
        usage = frame.get("usage")
        if not usage:
            return False
        draft.usage = _usage(usage)
        return draft.finish is not None

    def end(self, draft: Draft, rest: bytes) -> Chunk:
        if draft.finish is not None:
            # Some compatible servers close the stream without the [DONE] sentinel.
            return draft.final()
        raise UpstreamMalformed(self._deployment.id, "SSE stream ended before the answer finished")


def _decode(deployment: Deployment, event: bytes) -> dict[str, Any]:
    try:
        frame = orjson.loads(event)
    except orjson.JSONDecodeError as exc:
        raise malformed(deployment, "SSE event", event) from exc
    if not isinstance(frame, dict):
        raise malformed(deployment, "SSE event", event)
    return frame


def _apply_frame(
    deployment: Deployment, frame: dict[str, Any], text: list[str], calls: list[ToolCall]
) -> str | None:
    """Fold one chunk object into text and calls; return its finish reason."""
    if "error" in frame:
        raise _stream_error(deployment, frame["error"])
    choices = frame.get("choices")
    if not choices:
        return None
    try:
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            text.append(content)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            calls.append(
                ToolCall(
                    id=call.get("id") or "",
                    name=function.get("name") or "",
                    arguments=function.get("arguments") or "",
                    index=call.get("index", 0),
                )
            )
        finish: str | None = choice.get("finish_reason")
        return finish
    except (AttributeError, TypeError, IndexError) as exc:
        raise malformed(deployment, "chat.completion.chunk", orjson.dumps(frame)) from exc


def _apply_text_frame(deployment: Deployment, frame: dict[str, Any], text: list[str]) -> str | None:
    """Fold one text_completion chunk into text; return its finish reason."""
    if "error" in frame:
        raise _stream_error(deployment, frame["error"])
    choices = frame.get("choices")
    if not choices:
        return None
    try:
        choice = choices[0]
        piece = choice.get("text")
        if piece:
            text.append(piece)
        finish: str | None = choice.get("finish_reason")
        return finish
    except (AttributeError, TypeError, IndexError) as exc:
        raise malformed(deployment, "text_completion chunk", orjson.dumps(frame)) from exc


def _stream_error(deployment: Deployment, error: Any) -> UpstreamError:
    message = error.get("message") if isinstance(error, dict) else error
    return UpstreamUnavailable(
        deployment.id, f"upstream error mid-stream: {upstream_text(deployment, message)}"
    )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(raw.get("prompt_tokens"), raw.get("completion_tokens"), cached)


def build_body(deployment: Deployment, request: ChatRequest) -> dict[str, Any]:
    params = request.params
    body: dict[str, Any] = {
        "model": deployment.upstream_model,
        "messages": [_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(deployment.extra_params)
    max_tokens = params.max_tokens or deployment.max_output_tokens
    if max_tokens is not None:
        # OpenAI deprecated max_tokens (reasoning models reject it), while most
        # compatible servers (Ollama's /v1 among them) only read max_tokens.
        body[_max_tokens_key(deployment.api_base)] = max_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    for key, value in request.extra.items():
        if key not in _RESERVED:
            body[key] = value
    return body


def _max_tokens_key(api_base: str) -> str:
    host = urlsplit(api_base).hostname or ""
    return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.images:
        parts: list[dict[str, Any]] = []
        if message.content:
            parts.append({"type": "text", "text": message.content})
        parts.extend(
            {"type": "image_url", "image_url": {"url": _data_url(image)}}
            for image in message.images
        )
        out["content"] = parts
    elif message.tool_calls and not message.content:
        out["content"] = None
    else:
        out["content"] = message.content
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in message.tool_calls
        ]
    return out


def _data_url(image: str) -> str:
    if image.startswith(("data:", "http://", "https://")):
        return image
    return f"data:image/png;base64,{image}"
