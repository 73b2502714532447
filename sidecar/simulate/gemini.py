"""A simulated Google Gemini server (the Developer API, `v1beta`).

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse
    GET  /v1beta/models, GET /v1beta/models/{model}
    (and the same under /v1, which google-genai 3 calls by default)

The key is read from `x-goog-api-key` (or `?key=`). Streams are SSE `data:` events
separated by CRLF blank lines, each a whole `GenerateContentResponse` holding only the
new parts, with no event names and no sentinel: the body ends after the chunk with the
`finishReason`. Every chunk repeats `usageMetadata`, cumulatively (so a client that sums
the chunks' figures is caught out), and `modelVersion` / `responseId`. Errors are
`{"error": {"code", "message", "status", "details"}}`: 429 `RESOURCE_EXHAUSTED` with a
`RetryInfo`, 503 `UNAVAILABLE` (also for the `http_529` fault, which Gemini has not),
500 `INTERNAL`; `error_line` sends such an error object as an event after a 200.

Beyond the text and tool answers of reply.py:
- Schemas: a tool's `parameters` or a `responseSchema` using a JSON Schema keyword
  Gemini's `Schema` lacks (`additionalProperties`, `$ref`, `const`, ...) is refused with
  a 400 naming it, as the API does.
- Thinking (on unless `thinkingConfig.thinkingBudget` is 0): `thoughtsTokenCount` in the
  usage, a `thought: true` part when `includeThoughts` is set, and a `thoughtSignature`
  on the first function call of an answer. A later request is refused with a 400 if a
  signature does not match its function call byte for byte, or if a model turn of the
  current tool loop lost the signature of its first function call.
- Implicit caching: a system instruction and tools seen before are the cached prefix,
  reported as `cachedContentTokenCount` (part of `promptTokenCount`).
- Parallel function calls: every declared function the user's last words name.
- Finish reasons: `STOP`, `MAX_TOKENS`; a user text containing `[sim:finish_reason=X]`
  ends with X (no content for `MALFORMED_FUNCTION_CALL`), and `[sim:block_reason=X]`
  blocks the prompt (`promptFeedback.blockReason`, no candidates).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from sidecar.simulate.embedding import vector_for
from sidecar.simulate.faults import HTTP_FAULT_STATUS, Fault
from sidecar.simulate.profile import SimProfile, answer_token
from sidecar.simulate.reply import JsonOutput, Tool, arguments, choose_tool
from sidecar.simulate.server import (
    TOOL_CALL_TOKENS,
    Answer,
    ChatCall,
    Exchange,
    Simulator,
    WireError,
    json_response,
    prompt_tokens,
)

_SSE: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_OVERRIDE: Final = re.compile(r"\[sim:(finish_reason|block_reason)=([A-Z_]+)\]")
_THOUGHT: Final = "Let me work out which function answers this."
_MALFORMED: Final = "MALFORMED_FUNCTION_CALL"
# Keywords of Gemini's Schema (an OpenAPI 3.0 subset); any other is refused.
SCHEMA_KEYWORDS: Final = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
_STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class _Call(ChatCall):
    """What a Gemini answer depends on beyond the shared `ChatCall`."""

    tools: tuple[Tool, ...] = ()  # every function called, `tool` being the first
    thinking: bool = True
    include_thoughts: bool = False
    stop_sequences: tuple[str, ...] = ()
    finish_override: str | None = None
    block_reason: str | None = None
    cached: int = 0


# The length of a simulated embedding when the request asks for none (text-embedding-004's).
EMBED_DIMENSIONS: Final = 768


class GeminiSimulator(Simulator):
    """With `api_key` set, requests need `x-goog-api-key: <api_key>`. Any model name is
    served unless `models` is given."""

    def __init__(
        self,
        profile: SimProfile | None = None,
        fault: Fault | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(profile, fault, host=host, port=port, models=models)
        self.api_key = api_key
        # Signs function calls; a fresh key per simulator, like a real server's secret.
        self._secret = uuid.uuid4().bytes
        self._cached_prefixes: set[bytes] = set()

    @property
    def base_url(self) -> str:
        # The SDK's base URL is the host: it appends /v1beta/models/... itself.
        return self.root_url

    def _routes(self) -> list[web.RouteDef]:
        # v1beta is what the sidecar speaks; google-genai 3 defaults to v1.
        return [
            route
            for version in ("v1beta", "v1")
            for route in (
                web.post(f"/{version}/models/{{target}}", self._model_method),
                web.get(f"/{version}/models", self._models),
                web.get(f"/{version}/models/{{model}}", self._model),
            )
        ]

    def sign(self, call: Mapping[str, Any]) -> str:
        """The signature of one function call: its name and arguments, canonically."""
        message = orjson.dumps(
            {"name": call.get("name"), "args": call.get("args") or {}},
            option=orjson.OPT_SORT_KEYS,
        )
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    async def _model_method(self, request: web.Request) -> web.StreamResponse:
        """`models/{model}:method`: embeddings, or a chat for every other method."""
        method = request.match_info["target"].partition(":")[2]
        if method == "batchEmbedContents":
            return await self._embed(request)
        return await self._chat_endpoint(request)

    # ----- embeddings ----------------------------------------------------------------------

    async def _embed(self, request: web.Request) -> web.Response:
        """`:batchEmbedContents`: one `{"values": [...]}` per request, in order; no usage
        (Gemini's embedding answers carry none)."""
        try:
            self._authorize(request)
            model = request.match_info["target"].partition(":")[0]
            if not self._knows(model):
                raise WireError(404, f"models/{model} is not found for this API version")
            body = await self._read_body(request)
            items = body.get("requests")
            if not isinstance(items, list) or not items:
                raise WireError(400, "* BatchEmbedContentsRequest.requests: must not be empty")
            texts, dimensions = [], EMBED_DIMENSIONS
            for index, item in enumerate(items):
                where = f"requests[{index}]"
                parts = (item.get("content") or {}).get("parts") if isinstance(item, dict) else None
                if not isinstance(parts, list) or not all(
                    isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
                ):
                    raise WireError(400, f"* {where}.content.parts: expected text parts")
                if item.get("model") != f"models/{model}":
                    raise WireError(400, f"* {where}.model: must be models/{model}")
                wanted = item.get("outputDimensionality", EMBED_DIMENSIONS)
                if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
                    raise WireError(400, f"* {where}.output_dimensionality: must be positive")
                dimensions = wanted
                texts.append("".join(p["text"] for p in parts))
            failure = await self._embed_fault()
            if failure is not None:
                raise failure
        except WireError as err:
            return self._error_response(err)
        return json_response({"embeddings": [{"values": vector_for(t, dimensions)} for t in texts]})

    # ----- chat ----------------------------------------------------------------------------

    async def _parse_chat(self, request: web.Request) -> ChatCall:
        self._authorize(request)
        model, _, method = request.match_info["target"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise WireError(404, f"Method {method or '(none)'} not found for models/{model}")
        stream = method == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            raise WireError(400, "this simulator streams with ?alt=sse only")
        if not self._knows(model):
            raise WireError(
                404, f"models/{model} is not found for this API version, or is not supported"
            )
        body = await self._read_body(request)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise WireError(400, "* GenerateContentRequest.contents: contents is not specified")
        turns = [_turn(index, content) for index, content in enumerate(contents)]
        config = body.get("generationConfig") or {}
        if not isinstance(config, dict):
            raise WireError(400, "Invalid JSON payload received. 'generationConfig' not an object")
        thinking_config = _field(config, "thinkingConfig", "thinking_config") or {}
        thinking = _field(thinking_config, "thinkingBudget", "thinking_budget") != 0
        self._check_signatures(turns, thinking)
        tools = self._tools_to_call(body, turns)
        output = self._output(config)
        max_tokens = _field(config, "maxOutputTokens", "max_output_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
        ):
            raise WireError(400, "generation_config.max_output_tokens: must be an integer")
        system = body.get("systemInstruction")
        prefix_tokens, cached = self._cache(system, body.get("tools"))
        override = _override(turns)
        stop = _field(config, "stopSequences", "stop_sequences") or ()
        return _Call(
            model=model,
            stream=stream,
            max_tokens=max_tokens,
            prompt_tokens=prompt_tokens(_shaped(t) for t in turns) + prefix_tokens,
            tool=tools[0] if tools else None,
            output=output,
            seed=config.get("seed"),
            reply_id=uuid.uuid4().hex[:20],
            tools=tools,
            thinking=thinking,
            include_thoughts=bool(_field(thinking_config, "includeThoughts", "include_thoughts"))
            and thinking,
            stop_sequences=tuple(s for s in stop if isinstance(s, str)),
            finish_override=override.get("finish_reason"),
            block_reason=override.get("block_reason"),
            cached=cached,
        )

    def _authorize(self, request: web.Request) -> None:
        given = request.headers.get("x-goog-api-key") or request.query.get("key")
        if self.api_key is None:
            return
        if not given:
            raise WireError(403, "Method doesn't allow unregistered callers")
        if not hmac.compare_digest(given, self.api_key):
            raise WireError(400, "API key not valid. Please pass a valid API key.")

    def _check_signatures(self, turns: list[dict[str, Any]], thinking: bool) -> None:
        """Every signature must match its function call; with thinking on, the first
        function call of each model turn since the last user text must carry one."""
        current = len(turns)
        while current > 0 and not _is_user_text(turns[current - 1]):
            current -= 1
        for index, turn in enumerate(turns):
            if turn.get("role") != "model":
                continue
            calls = [p for p in turn["parts"] if isinstance(p.get("functionCall"), dict)]
            for part in turn["parts"]:
                signature = part.get("thoughtSignature")
                if signature is None:
                    continue
                call = part.get("functionCall")
                if not isinstance(call, dict) or not isinstance(signature, str):
                    continue  # text signatures are not checked
                if not hmac.compare_digest(_bytes(signature), _bytes(self.sign(call))):
                    raise WireError(
                        400, f"Corrupted thought signature in contents[{index}] function call"
                    )
            if thinking and index >= current and calls and "thoughtSignature" not in calls[0]:
                name = calls[0]["functionCall"].get("name", "")
                raise WireError(
                    400,
                    f"Function call `{name}` in the {index + 1}. content block is missing "
                    "a `thought_signature`.",
                )

    def _tools_to_call(self, body: dict[str, Any], turns: list[dict[str, Any]]) -> tuple[Tool, ...]:
        raw = body.get("tools")
        if not raw:
            return ()
        if not isinstance(raw, list):
            raise WireError(400, "Invalid JSON payload received. 'tools' is not a list")
        declared = []
        for index, tool in enumerate(raw):
            functions = tool.get("functionDeclarations") if isinstance(tool, dict) else None
            for number, function in enumerate(functions or ()):
                where = f"tools[{index}].function_declarations[{number}]"
                name = function.get("name") if isinstance(function, dict) else None
                if not isinstance(name, str) or not name:
                    raise WireError(400, f"* GenerateContentRequest.{where}.name: name is empty")
                parameters = function.get("parameters")
                if parameters is not None:
                    check_schema(parameters, f"{where}.parameters")
                schema = _lowercase_types(parameters or {"type": "object", "properties": {}})
                declared.append(Tool(name, schema))
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = calling.get("mode", "AUTO")
        allowed = calling.get("allowedFunctionNames") or []
        forced = (allowed[0] if allowed else "") if mode == "ANY" else None
        first = choose_tool(
            declared, [_shaped(t) for t in turns], forced=forced, allowed=mode != "NONE"
        )
        if first is None:
            return ()
        if forced is not None:
            return (first,)
        words = _last_text(turns)
        named = tuple(t for t in declared if t.name in words)
        return named if len(named) > 1 else (first,)

    def _output(self, config: dict[str, Any]) -> JsonOutput | None:
        if _field(config, "responseMimeType", "response_mime_type") != "application/json":
            return None
        schema = _field(config, "responseSchema", "response_schema")
        if schema is None:
            return JsonOutput()
        check_schema(schema, "generation_config.response_schema")
        return JsonOutput(_lowercase_types(schema))

    def _cache(self, system: object, tools: object) -> tuple[int, int]:
        """(prefix tokens, of which read from the implicit cache)."""
        if not system and not tools:
            return 0, 0
        prefix = orjson.dumps([system, tools], option=orjson.OPT_SORT_KEYS)
        tokens = max(1, len(prefix) // 4)
        key = hashlib.sha256(prefix).digest()
        if key in self._cached_prefixes:
            return tokens, tokens
        self._cached_prefixes.add(key)
        return tokens, 0

    def _error_response(self, error: WireError) -> web.Response:
        return json_response(_error_body(error), status=error.status, headers=error.headers)

    def _fault_error(self, fault: Fault) -> WireError:
        status = HTTP_FAULT_STATUS[fault.kind]
        if status == 429:
            return WireError(
                429,
                "You exceeded your current quota, please check your plan and billing details "
                "(simulated).",
                code=f"{fault.retry_after:g}s",
            )
        if status in (503, 529):
            return WireError(503, "The model is overloaded. Please try again later.")
        return WireError(500, "An internal error has occurred. Please retry.")

    def _stream_headers(self, call: ChatCall) -> dict[str, str]:
        return dict(_SSE)

    def _head_frames(self, call: ChatCall) -> Sequence[bytes]:
        own = _own(call)
        if own.block_reason is not None:
            return []
        if own.include_thoughts:
            part = {"text": _THOUGHT, "thought": True}
            return [_frame(self._chunk(own, [part], None, 0))]
        return []

    def _body_frames(self, call: ChatCall, answer: Answer) -> Iterator[bytes]:
        own = _own(call)
        if own.block_reason is not None or own.finish_override == _MALFORMED:
            return
        if call.tool is not None:
            yield _frame(self._chunk(own, self._call_parts(own, answer), None, TOOL_CALL_TOKENS))
            return
        pieces = answer.pieces
        for index in range(_text_tokens(own, answer)):
            text = answer_token(index) if pieces is None else pieces[index]
            yield _frame(self._chunk(own, [{"text": text}], None, index + 1))

    def _tail_frames(
        self, exchange: Exchange, call: ChatCall, answer: Answer, sent: int
    ) -> Sequence[bytes]:
        own = _own(call)
        if own.block_reason is not None:
            return [_frame(self._blocked(own))]
        output = len(own.tools) * TOOL_CALL_TOKENS if call.tool is not None else sent
        # The last chunk: an empty text part with the finish reason, the usage complete.
        final = self._chunk(own, [{"text": ""}], _finish(own, answer), output)
        return [_frame(final)]

    def _completion(self, exchange: Exchange, call: ChatCall, answer: Answer) -> bytes:
        own = _own(call)
        if own.block_reason is not None:
            return orjson.dumps(self._blocked(own))
        parts: list[dict[str, Any]] = []
        if own.include_thoughts:
            parts.append({"text": _THOUGHT, "thought": True})
        if own.finish_override == _MALFORMED:
            output = 0
        elif call.tool is not None:
            parts.extend(self._call_parts(own, answer))
            output = len(own.tools) * TOOL_CALL_TOKENS
        else:
            tokens = _text_tokens(own, answer)
            if answer.pieces is None:
                text = "".join(answer_token(i) for i in range(tokens))
            else:
                text = "".join(answer.pieces[:tokens])
            parts.append({"text": text})
            output = tokens
        return orjson.dumps(self._chunk(own, parts, _finish(own, answer), output))

    def _chunk(
        self, call: _Call, parts: list[dict[str, Any]], finish: str | None, output: int
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(call, output),
            "modelVersion": call.model,
            "responseId": call.reply_id,
        }

    def _blocked(self, call: _Call) -> dict[str, Any]:
        return {
            "promptFeedback": {"blockReason": call.block_reason},
            "usageMetadata": _usage(call, 0),
            "modelVersion": call.model,
            "responseId": call.reply_id,
        }

    def _call_parts(self, call: _Call, answer: Answer) -> list[dict[str, Any]]:
        parts = []
        rng = random.Random(call.reply_id)
        for number, tool in enumerate(call.tools):
            args = (answer.arguments or {}) if number == 0 else arguments(tool, rng)
            function = {"name": tool.name, "args": args}
            part: dict[str, Any] = {"functionCall": function}
            # Gemini signs only the first call of a batch of parallel calls.
            if number == 0 and call.thinking:
                part["thoughtSignature"] = self.sign(function)
            parts.append(part)
        return parts

    def _garbage_frame(self, call: ChatCall) -> bytes:
        return b'data: {"candidates": [{"content": \r\n\r\n'

    def _error_frame(self) -> bytes:
        error = WireError(503, "The model is overloaded. Please try again later.")
        return _frame(_error_body(error))

    # ----- models --------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except WireError as err:
            return self._error_response(err)
        return json_response({"models": [_model_entry(n) for n in self._listed_models()]})

    async def _model(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except WireError as err:
            return self._error_response(err)
        name = request.match_info["model"]
        if not self._knows(name):
            return self._error_response(WireError(404, f"models/{name} is not found"))
        return json_response(_model_entry(name))


def check_schema(schema: object, where: str) -> None:
    """A 400 naming the first keyword Gemini's Schema does not have, as the API answers."""
    if not isinstance(schema, Mapping):
        raise WireError(400, f"Invalid value at '{where}': expected an object")
    for key, value in schema.items():
        if key not in SCHEMA_KEYWORDS:
            raise WireError(
                400, f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                "Cannot find field."
            )  # fmt: skip
        if key == "properties" and isinstance(value, Mapping):
            for name, inner in value.items():
                check_schema(inner, f"{where}.properties[{name}].value")
        elif key == "items":
            check_schema(value, f"{where}.items")
        elif key == "anyOf" and isinstance(value, list):
            for number, inner in enumerate(value):
                check_schema(inner, f"{where}.any_of[{number}]")


def _turn(index: int, content: object) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise WireError(400, f"Invalid value at 'contents[{index}]': expected a Content object")
    role = content.get("role", "user")
    if role not in ("user", "model"):
        raise WireError(
            400, f"Please use a valid role: user, model. (contents[{index}].role is {role!r})"
        )
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise WireError(
            400,
            f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.",
        )
    return {"role": role, "parts": parts}


def _field(fields: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A field by its JSON name or its proto name: the API's parser accepts both."""
    return fields.get(camel, fields.get(snake))


def _bytes(signature: str) -> bytes:
    """A signature's bytes: proto JSON reads base64 in either alphabet (the SDK sends
    back the URL-safe one)."""
    try:
        return base64.urlsafe_b64decode(signature.replace("+", "-").replace("/", "_"))
    except ValueError:
        return b""


def _lowercase_types(schema: object) -> Any:
    """A Gemini schema as JSON Schema for reply.py: Gemini's types may be upper case."""
    if isinstance(schema, list):
        return [_lowercase_types(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: _lowercase_types(value) for key, value in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    return out


def _own(call: ChatCall) -> _Call:
    assert isinstance(call, _Call)  # this simulator's _parse_chat builds every call
    return call


def _is_user_text(turn: dict[str, Any]) -> bool:
    return turn["role"] == "user" and not any("functionResponse" in p for p in turn["parts"])


def _shaped(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn as the OpenAI-shaped message reply.py reads: a user turn of function
    responses is a tool turn."""
    if not _is_user_text(turn) and turn["role"] == "user":
        return {"role": "tool", "content": ""}
    texts = [p["text"] for p in turn["parts"] if isinstance(p.get("text"), str)]
    role = "assistant" if turn["role"] == "model" else "user"
    return {"role": role, "content": "\n".join(texts)}


def _last_text(turns: list[dict[str, Any]]) -> str:
    for turn in reversed(turns):
        if _is_user_text(turn):
            return str(_shaped(turn)["content"])
    return ""


def _override(turns: list[dict[str, Any]]) -> dict[str, str]:
    return {kind: value for kind, value in _OVERRIDE.findall(_last_text(turns))}


def _thinking_tokens(call: _Call) -> int:
    return len(_THOUGHT) // 4 if call.thinking else 0


def _usage(call: _Call, output: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": call.prompt_tokens,
        "candidatesTokenCount": output,
        "totalTokenCount": call.prompt_tokens + output + _thinking_tokens(call),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": call.prompt_tokens}],
    }
    if call.thinking:
        usage["thoughtsTokenCount"] = _thinking_tokens(call)
    if call.cached:
        usage["cachedContentTokenCount"] = call.cached
    return usage


def _text_tokens(call: _Call, answer: Answer) -> int:
    """Tokens sent: those before a stop sequence, if one is among them."""
    for index in range(answer.tokens):
        if answer_token(index).strip() in call.stop_sequences:
            return index
    return answer.tokens


def _finish(call: _Call, answer: Answer) -> str:
    if call.finish_override is not None:
        return call.finish_override
    if call.tool is None and answer.capped and _text_tokens(call, answer) == answer.tokens:
        return "MAX_TOKENS"
    return "STOP"  # function calls and stop sequences end with STOP too


def _error_body(error: WireError) -> dict[str, Any]:
    status = _STATUS_NAMES.get(error.status, "UNKNOWN")
    body: dict[str, Any] = {"code": error.status, "message": error.message, "status": status}
    if error.status == 429:
        body["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": error.code or "1s",
            }
        ]
    return {"error": body}


def _frame(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "thinking": True,
    }
