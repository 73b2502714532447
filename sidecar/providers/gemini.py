"""Google Gemini: POST {api_base}/v1beta/models/{model}:streamGenerateContent?alt=sse.

The key goes in the `x-goog-api-key` header, never in the URL (URLs end up in logs).
Going out, system and developer messages become `systemInstruction`, assistant turns
are `model` turns whose tool calls are `functionCall` parts, tool results are
`functionResponse` parts of a user turn (matched to their call by name, which is
what Gemini reads), generation parameters sit in `generationConfig`, and every JSON
Schema (tool parameters, structured output) goes through `schema.gemini_schema`
first, because Gemini refuses much of JSON Schema.

Coming back, each SSE event is a whole `GenerateContentResponse` holding only the new
parts; there is no sentinel, but the chunk with the `finishReason` (or a blocked prompt's
`promptFeedback`) is the last, so the answer ends there whatever the upstream then does
with the socket. Parts marked `thought` are reasoning;
function calls arrive whole and without an index, so they are numbered here, in the
order they come, and given ids of their own. `usageMetadata` is cumulative: the last
figure seen is the answer's, nothing is summed. Output is candidates plus thoughts
(both billed as output); the prompt includes cached and tool-use prompt tokens.

Thought signatures. Gemini signs its reasoning on parts of the answer (the first
`functionCall` of a batch, or a text part) and refuses the next turn of a tool loop
when a signature did not come back on its part. Each signature travels in the
canonical types as a `ThinkingBlock` (the thought text before it, and the signature,
byte for byte), in the order the parts came; the caller sends them back with the
assistant turn. On the way out they are put back on the turn's parts in the same
order: on its function calls first (the first signature on the first call, where
Gemini puts a batch's one signature), then on its text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final
from urllib.parse import quote

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
from sidecar.providers.embedding import vectors_from
from sidecar.providers.gemini_schema import gemini_schema
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
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    Embeddings,
    Message,
    ThinkingBlock,
    ToolCall,
    Usage,
)

# Finish reasons with an OpenAI counterpart. Any other (OTHER, LANGUAGE,
# UNEXPECTED_TOOL_CALL, those added later) is reported as Gemini named it, so a caller
# never mistakes it for a finished answer.
FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# The model wrote a function call that does not parse: an error, never an empty answer.
MALFORMED_CALL: Final = "MALFORMED_FUNCTION_CALL"
# Google error statuses another deployment, or a later retry, may not hit.
_RETRYABLE_STATUS: Final = frozenset({"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"})
# generationConfig keys a request or deployment may give under their OpenAI or Gemini names.
_GENERATION_KEYS: Final = {
    "top_k": "topK",
    "topK": "topK",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "candidate_count": "candidateCount",
    "thinking_config": "thinkingConfig",
    "thinkingConfig": "thinkingConfig",
    "response_modalities": "responseModalities",
    "media_resolution": "mediaResolution",
}
# Top-level request fields passed on as they are (Gemini's own names and the SDK's).
_TOP_LEVEL: Final = {
    "safetySettings": "safetySettings",
    "safety_settings": "safetySettings",
    "cachedContent": "cachedContent",
    "cached_content": "cachedContent",
    "labels": "labels",
}
# OpenAI's reasoning_effort as a thinking budget, the figures LiteLLM uses.
_THINKING_BUDGETS: Final = {"minimal": 128, "low": 1024, "medium": 2048, "high": 4096}


class MalformedFunctionCall(UpstreamMalformed):
    """The model wrote a function call that does not parse (`MALFORMED_FUNCTION_CALL`).

    An error rather than an empty answer; another deployment may well manage, but it
    says nothing about this deployment's health (a caller's tools may provoke it)."""

    deployment_fault = False


class GeminiProvider:
    completes_text = False  # Gemini has no raw text-completion endpoint

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool

    async def embed(self, deployment: Deployment, request: EmbeddingRequest) -> Embeddings:
        """`:batchEmbedContents` with the whole batch, one content per input. Gemini embeds
        text, not token ids, and reports no token counts for embeddings."""
        if request.has_tokens:
            raise EmbeddingUnsupported(deployment.id, "Gemini embeds text, not token ids")
        model = "models/" + deployment.upstream_model.removeprefix("models/")
        items: list[dict[str, Any]] = []
        for text in request.texts:
            item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if request.dimensions is not None:
                item["outputDimensionality"] = request.dimensions
            items.append(item)
        path = f"{_version(deployment)}/{quote(model, safe='/')}:batchEmbedContents"
        headers = {"Content-Type": "application/json", **_auth(deployment)}
        reply = await post_json(self._pool, deployment, path, {"requests": items}, headers)
        embeddings = reply.get("embeddings")
        raw = (
            [item.get("values") if isinstance(item, dict) else None for item in embeddings]
            if isinstance(embeddings, list)
            else None
        )
        vectors = vectors_from(deployment, raw, len(items), "Gemini batchEmbedContents reply")
        return Embeddings(vectors, Usage(None, 0))

    def stream(self, deployment: Deployment, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        body = build_body(deployment, request)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        headers.update(_auth(deployment))
        reader = SseReader(self._pool.max_frame)
        path = stream_path(deployment)
        return relay(self._pool, deployment, path, body, headers, reader, _Decoder(deployment))

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult:
        """`GET /v1beta/models` lists the models without generating anything."""
        path = f"{_version(deployment)}/models"
        return await probe_model_list(self._pool, deployment, path, _auth(deployment), skip)


def stream_path(deployment: Deployment) -> str:
    model = quote(deployment.upstream_model.removeprefix("models/"), safe="")
    return f"{_version(deployment)}/models/{model}:streamGenerateContent?alt=sse"


def _version(deployment: Deployment) -> str:
    """The API version path, unless the configured api_base already ends in one."""
    if deployment.api_base.rstrip("/").endswith(("/v1beta", "/v1", "/v1alpha")):
        return ""
    return "/v1beta"


def _auth(deployment: Deployment) -> dict[str, str]:
    return {"x-goog-api-key": deployment.api_key} if deployment.api_key else {}


# ----- answers -----------------------------------------------------------------------------


class _Decoder:
    """Folds the `GenerateContentResponse` events of one answer; the one with a finish
    reason is the last."""

    __slots__ = ("_calls", "_deployment", "_finish", "_response_id", "_thought", "_usage")

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._calls = 0
        self._thought: list[str] = []  # thought text since the last signature
        self._usage: Mapping[str, Any] | None = None
        self._finish: str | None = None
        self._response_id = ""

    def fold(self, event: Event, draft: Draft) -> bool:
        try:
            frame = orjson.loads(event[1])
        except orjson.JSONDecodeError as exc:
            raise malformed(self._deployment, "SSE event", event[1]) from exc
        if isinstance(frame, list) and len(frame) == 1:
            frame = frame[0]  # an error may come wrapped in a one-element array
        if not isinstance(frame, dict):
            raise malformed(self._deployment, "SSE event", event[1])
        if "error" in frame:
            raise stream_error(self._deployment, frame["error"])
        usage = frame.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = usage  # cumulative: the latest figure replaces
        if not self._response_id and isinstance(frame.get("responseId"), str):
            self._response_id = frame["responseId"]
        candidates = frame.get("candidates")
        if not candidates:
            feedback = frame.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self._finish = "content_filter"  # the prompt itself was blocked
                return self._done(draft)
            return False
        candidate = candidates[0] if isinstance(candidates, list) else None
        if not isinstance(candidate, dict):
            raise malformed(self._deployment, "candidate", event[1])
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, dict):
                    self._part(part, draft)
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            if reason == MALFORMED_CALL:
                raise MalformedFunctionCall(
                    self._deployment.id,
                    "the model wrote a function call that does not parse "
                    "(finishReason MALFORMED_FUNCTION_CALL)",
                )
            self._finish = reason
            return self._done(draft)
        return False

    def _done(self, draft: Draft) -> bool:
        assert self._finish is not None
        draft.finish = finish_reason(self._finish, tool_calls=self._calls > 0)
        draft.usage = usage(self._usage)
        return True

    def _part(self, part: dict[str, Any], draft: Draft) -> None:
        text = part.get("text")
        call = part.get("functionCall")
        if part.get("thought") is True:
            if isinstance(text, str) and text:
                self._thought.append(text)
                draft.reasoning.append(text)
        elif isinstance(call, dict):
            index = self._calls
            self._calls += 1
            args = call.get("args")
            draft.calls.append(
                ToolCall(
                    id=self._call_id(call, index),
                    name=str(call.get("name") or ""),
                    arguments=orjson.dumps(args if isinstance(args, dict) else {}).decode(),
                    index=index,
                )
            )
        elif isinstance(text, str) and text:
            draft.text.append(text)
        signature = part.get("thoughtSignature")
        if isinstance(signature, str) and signature:
            draft.thinking.append(ThinkingBlock("".join(self._thought), signature))
            self._thought.clear()

    def _call_id(self, call: dict[str, Any], index: int) -> str:
        given = call.get("id")
        if isinstance(given, str) and given:
            return given
        # Unique across the rounds of a tool loop, since every answer has its own id.
        return f"call_{self._response_id}_{index}" if self._response_id else f"call_{index}"

    def end(self, draft: Draft, rest: bytes) -> Chunk:
        raise UpstreamMalformed(
            self._deployment.id, "the stream ended before any candidate gave a finishReason"
        )


def finish_reason(reason: str, *, tool_calls: bool = False) -> str:
    """The canonical finish reason; Gemini has none for tool calls (they end with STOP)."""
    if reason == "STOP" and tool_calls:
        return "tool_calls"
    return FINISH_REASONS.get(reason, reason)


def usage(raw: Mapping[str, Any] | None) -> Usage | None:
    """Canonical usage from one cumulative `usageMetadata`."""
    if not raw:
        return None

    def count(key: str) -> int | None:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    prompt = count("promptTokenCount")
    if prompt is not None:
        prompt += count("toolUsePromptTokenCount") or 0
    candidates, thoughts = count("candidatesTokenCount"), count("thoughtsTokenCount")
    completion = None
    if candidates is not None or thoughts is not None or prompt is not None:
        # Thinking is billed as output; an answer with no output reports no candidates.
        completion = (candidates or 0) + (thoughts or 0)
    return Usage(prompt, completion, count("cachedContentTokenCount"))


def stream_error(deployment: Deployment, error: object) -> UpstreamError:
    """The error a `{"error": {...}}` event stands for, classified by its status."""
    status = error.get("status") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    problem = f"upstream reported {status or 'an error'} mid-stream"
    if isinstance(message, str) and message:
        problem += f": {upstream_text(deployment, message)}"
    if status == "RESOURCE_EXHAUSTED" or code == 429:
        return UpstreamRateLimited(deployment.id, problem)
    if status in _RETRYABLE_STATUS or (isinstance(code, int) and code >= 500) or status is None:
        return UpstreamUnavailable(deployment.id, problem)
    return UpstreamRejected(deployment.id, problem)


# ----- requests ----------------------------------------------------------------------------


def build_body(deployment: Deployment, request: ChatRequest) -> dict[str, Any]:
    params = request.params
    body: dict[str, Any] = {"contents": _contents(request.messages)}
    system = [m.content for m in request.messages if m.role in ("system", "developer")]
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    _settings(deployment.extra_params, body, config)
    _settings(request.extra, body, config)
    max_tokens = params.max_tokens or deployment.max_output_tokens
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    if params.temperature is not None:
        config["temperature"] = params.temperature
    if params.top_p is not None:
        config["topP"] = params.top_p
    if params.stop:
        config["stopSequences"] = list(params.stop)
    if params.seed is not None:
        config["seed"] = params.seed
    _response_format(request.extra.get("response_format"), config)
    if config:
        body["generationConfig"] = config
    extra = request.extra
    tools = extra.get("tools")
    if isinstance(tools, list) and tools:
        body["tools"] = _tools(tools)
        choice = _tool_config(extra.get("tool_choice"))
        if choice is not None:
            body["toolConfig"] = {"functionCallingConfig": choice}
    return body


def _settings(source: Mapping[str, Any], body: dict[str, Any], config: dict[str, Any]) -> None:
    """Provider settings from a deployment's extra params or a request's extras."""
    for key, value in source.items():
        if key in _GENERATION_KEYS:
            config[_GENERATION_KEYS[key]] = value
        elif key in _TOP_LEVEL:
            body[_TOP_LEVEL[key]] = value
        elif key == "reasoning_effort" and value in _THINKING_BUDGETS:
            config["thinkingConfig"] = {
                "thinkingBudget": _THINKING_BUDGETS[value],
                "includeThoughts": True,
            }


def _response_format(response_format: object, config: dict[str, Any]) -> None:
    if not isinstance(response_format, dict):
        return
    kind = response_format.get("type")
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        config["responseMimeType"] = "application/json"
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema)


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    """OpenAI function tools as one list of function declarations; Gemini's own tools
    (googleSearch, codeExecution, ...) as they are."""
    declarations = []
    native = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            native.append(tool)
            continue
        function = tool.get("function") or {}
        declaration: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        # A function without parameters declares none: Gemini refuses an empty object schema.
        if isinstance(parameters, dict) and parameters.get("properties"):
            declaration["parameters"] = gemini_schema(parameters)
        declarations.append(declaration)
    out: list[dict[str, Any]] = [{"functionDeclarations": declarations}] if declarations else []
    return out + native


def _tool_config(choice: object) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return None
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name", "")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    if isinstance(choice, dict) and "mode" in choice:
        return dict(choice)  # already Gemini's shape
    return None


def _contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """User and model turns; consecutive ones of the same role merge into one, so that
    the results of parallel calls share the user turn that answers them."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id -> function name, for the results
    for message in messages:
        if message.role in ("system", "developer"):
            continue
        role = "model" if message.role == "assistant" else "user"
        if message.role == "assistant":
            parts = _model_parts(message)
            names.update((call.id, call.name) for call in message.tool_calls)
        elif message.role == "tool":
            name = names.get(message.tool_call_id) or message.name
            parts = [{"functionResponse": {"name": name, "response": _response(message.content)}}]
        else:
            parts = _user_parts(message)
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _model_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"text": message.content})
    parts.extend(
        {"functionCall": {"name": call.name, "args": _args(call.arguments)}}
        for call in message.tool_calls
    )
    signatures = [block.signature for block in message.thinking if block.signature]
    # Function calls first (where Gemini signs a batch), then the text.
    signable = parts[1:] + parts[:1] if message.content else parts
    for part, signature in zip(signable, signatures, strict=False):
        part["thoughtSignature"] = signature
    if not parts and signatures:
        parts.append({"text": "", "thoughtSignature": signatures[0]})
    return parts or [{"text": ""}]


def _user_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    parts.extend(_image(image) for image in message.images)
    return parts or [{"text": ""}]


def _response(content: str) -> dict[str, Any]:
    """A tool's result as the object `functionResponse.response` must be."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        value = content
    return value if isinstance(value, dict) else {"output": value}


def _args(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _image(image: str) -> dict[str, Any]:
    if image.startswith(("http://", "https://", "gs://")):
        return {"fileData": {"mimeType": _mime_of(image), "fileUri": image}}
    mime, data = "image/png", image
    if image.startswith("data:"):
        header, _, data = image.partition(",")
        mime = header[5:].split(";", 1)[0] or mime
    return {"inlineData": {"mimeType": mime, "data": data}}


def _mime_of(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    for suffix, mime in ((".jpg", "image/jpeg"), (".jpeg", "image/jpeg"), (".webp", "image/webp")):
        if path.endswith(suffix):
            return mime
    return "image/png"
