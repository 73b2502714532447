"""Ollama's native API: POST /api/chat, answered as NDJSON lines; POST /api/embed."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from sidecar.config.model import Deployment
from sidecar.errors import EmbeddingUnsupported, UpstreamMalformed, UpstreamUnavailable
from sidecar.providers.base import ProbeResult, ProbeStatus
from sidecar.providers.embedding import count, vectors_from
from sidecar.providers.http import (
    HttpPool,
    NotOffered,
    fetch_json,
    malformed,
    post_json,
    upstream_text,
)
from sidecar.providers.ndjson import NdjsonReader
from sidecar.providers.relay import Draft, relay
from sidecar.types import ChatRequest, Chunk, EmbeddingRequest, Embeddings, Message, ToolCall, Usage

_HEADERS = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# litellm_params that belong at the top level of an Ollama request, not in `options`.
_TOP_LEVEL = frozenset({"keep_alive", "think", "truncate", "shift", "format"})


class OllamaProvider:
    completes_text = True  # /api/generate, raw: no chat template around the prompt

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool

    def stream(self, deployment: Deployment, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = build_body(deployment, request)
        path = "/api/chat"
        if request.completion:
            path = "/api/generate"
            body["prompt"] = "".join(m.content for m in request.messages if m.role == "user")
            body["raw"] = True
            del body["messages"]
        reader = NdjsonReader(self._pool.max_frame)
        decoder = _Decoder(deployment, generate=request.completion)
        return relay(self._pool, deployment, path, body, _HEADERS, reader, decoder)

    async def embed(self, deployment: Deployment, request: EmbeddingRequest) -> Embeddings:
        """`POST /api/embed` with the whole batch; Ollama embeds text, not token ids."""
        if request.has_tokens:
            raise EmbeddingUnsupported(
                deployment.id, "Ollama's /api/embed takes text, not token ids"
            )
        body: dict[str, Any] = {"model": deployment.upstream_model, "input": list(request.inputs)}
        for key in ("keep_alive", "truncate"):
            if key in deployment.extra_params:
                body[key] = deployment.extra_params[key]
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        reply = await post_json(self._pool, deployment, "/api/embed", body, _JSON_HEADERS)
        vectors = vectors_from(
            deployment, reply.get("embeddings"), len(request.inputs), "Ollama /api/embed reply"
        )
        return Embeddings(vectors, Usage(count(reply.get("prompt_eval_count")), 0))

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult:
        """Is Ollama up and the model pulled and loaded? `/api/tags` and `/api/ps` cost
        no tokens.

        Either endpoint may be missing (older builds, proxies that expose only the
        chat API, other Ollama-compatible servers): a 404/405/501 is reported in
        `not_offered`, and the caller passes those back in `skip`. A pulled model
        that is not loaded yet answers its first request only after loading it: cold.
        """
        model = deployment.upstream_model
        wanted = listed_names(model)
        not_offered: list[str] = []
        unknown: list[str] = []
        learned = False
        for path in ("/api/tags", "/api/ps"):
            if path in skip:
                continue
            try:
                reply = await fetch_json(self._pool, deployment, "GET", path)
            except NotOffered:
                not_offered.append(path)
                continue
            except UpstreamMalformed as exc:
                unknown.append(exc.message)
                continue
            names = _model_names(reply)
            if names is None:
                unknown.append(f"reply to GET {path} lists no models in Ollama's shape")
                continue
            learned = True
            if path == "/api/tags" and names and not wanted & names:
                detail = f"model {model!r} is not pulled on {deployment.api_base}"
                return ProbeResult(ProbeStatus.NOT_PULLED, detail, tuple(not_offered))
            if path == "/api/ps" and not wanted & names:
                detail = f"model {model!r} is not loaded yet: the first call will be slower"
                return ProbeResult(ProbeStatus.COLD, detail, tuple(not_offered))
        if learned:
            return ProbeResult(ProbeStatus.READY, "", tuple(not_offered))
        exhausted = skip.union(not_offered) >= {"/api/tags", "/api/ps"}
        return ProbeResult(ProbeStatus.UNKNOWN, "; ".join(unknown), tuple(not_offered), exhausted)


def listed_names(model: str) -> frozenset[str]:
    """The names Ollama may list `model` under: a name without a tag means `:latest`."""
    # The tag follows the last "/", so a registry port ("host:5000/llama3") is not one.
    if ":" in model.rpartition("/")[2]:
        return frozenset((model,))
    return frozenset((model, f"{model}:latest"))


class _Decoder:
    """Folds /api/chat lines (or /api/generate's, whose text is `response`); the line
    with `done: true` is the last."""

    __slots__ = ("_calls", "_deployment", "_generate")

    def __init__(self, deployment: Deployment, *, generate: bool = False) -> None:
        self._deployment = deployment
        self._calls = 0  # tool calls so far, to number the ones Ollama gives no id
        self._generate = generate

    def fold(self, line: bytes, draft: Draft) -> bool:
        try:
            frame = orjson.loads(line)
            if "error" in frame:
                # Ollama reports failures after the first byte as an error line (HTTP 200).
                problem = upstream_text(self._deployment, frame["error"])
                raise UpstreamUnavailable(self._deployment.id, f"upstream error: {problem}")
            if self._generate:
                text = frame.get("response")
                if text:
                    draft.text.append(text)
            message = frame.get("message")
            if message:
                content = message.get("content")
                if content:
                    draft.text.append(content)
                calls = message.get("tool_calls")
                if calls:
                    draft.calls += _tool_calls(calls, self._calls)
                    self._calls += len(calls)
            if not frame.get("done"):
                return False
            finish = frame.get("done_reason") or "stop"
            # Ollama says "stop" after tool calls; OpenAI's convention, which the
            # front doors speak, says "tool_calls".
            draft.finish = "tool_calls" if self._calls and finish == "stop" else finish
            draft.usage = Usage(frame.get("prompt_eval_count"), frame.get("eval_count"))
            return True
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            raise malformed(self._deployment, "Ollama stream line", line) from exc

    def end(self, draft: Draft, rest: bytes) -> Chunk:
        if rest:
            raise malformed(self._deployment, "Ollama stream ending", rest)
        raise UpstreamMalformed(self._deployment.id, "Ollama stream ended without a done line")


def _tool_calls(calls: list[dict[str, Any]], start: int) -> tuple[ToolCall, ...]:
    out = []
    for i, call in enumerate(calls, start):
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        out.append(
            ToolCall(
                id=call.get("id") or f"call_{i}",
                name=function.get("name", ""),
                arguments=arguments
                if isinstance(arguments, str)
                else orjson.dumps(arguments).decode(),
                index=function.get("index", i),
            )
        )
    return tuple(out)


def build_body(deployment: Deployment, request: ChatRequest) -> dict[str, Any]:
    params = request.params
    options: dict[str, Any] = {}
    body: dict[str, Any] = {
        "model": deployment.upstream_model,
        "messages": [_message(m) for m in request.messages],
        "stream": True,
        "options": options,
    }
    for key, value in deployment.extra_params.items():
        (body if key in _TOP_LEVEL else options)[key] = value
    max_tokens = params.max_tokens or deployment.max_output_tokens
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    if deployment.context_window is not None and not deployment.discovered_window:
        # Without num_ctx Ollama silently truncates the prompt to its default window.
        # A window discovered from Ollama itself is what it already uses: resending
        # it could only force a reload.
        options.setdefault("num_ctx", deployment.context_window)
    if params.temperature is not None:
        options["temperature"] = params.temperature
    if params.top_p is not None:
        options["top_p"] = params.top_p
    if params.stop:
        options["stop"] = list(params.stop)
    if params.seed is not None:
        options["seed"] = params.seed
    extra = request.extra
    if extra:
        for key in ("tools", "keep_alive", "think", "format"):
            if key in extra:
                body[key] = extra[key]
        fmt = _format(extra.get("response_format"))
        if fmt is not None:
            body["format"] = fmt
        if isinstance(extra.get("options"), dict):
            options.update(extra["options"])
    return body


def _format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema")
    return None


def _message(message: Message) -> dict[str, Any]:
    # Ollama has no "developer" role; it is the newer name for system instructions.
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.content}
    if message.images:
        out["images"] = [_strip_data_url(image) for image in message.images]
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": _json_object(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.role == "tool":
        if message.name:
            out["tool_name"] = message.name
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
    return out


def _strip_data_url(image: str) -> str:
    # Ollama wants bare base64; OpenAI-style callers send data: URLs.
    if image.startswith("data:"):
        return image.partition(",")[2]
    return image


def _json_object(arguments: str) -> Any:
    try:
        return orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {}


def _model_names(reply: dict[str, Any]) -> set[str] | None:
    """The model names of an `/api/tags` or `/api/ps` reply; None when it has no list."""
    models = reply.get("models")
    if models is None:
        return set()  # Ollama sends null for an empty list
    if not isinstance(models, list):
        return None
    return {m["name"] for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)}
