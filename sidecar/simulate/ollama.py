"""A simulated Ollama server speaking the native API (Ollama's API
documentation: /api/chat, /api/tags, /api/ps, /api/show).

Streams are NDJSON, one `ChatResponse` object per line, ending with the `done: true` line
that carries `done_reason`, the token counts and the durations in nanoseconds. Errors are
`{"error": "..."}`, before the stream as an HTTP status, after it as a last line. What the
answer says (text, a tool call, JSON for `format`) is decided in reply.py; `logprobs` is
refused with a 400.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiohttp import web

from sidecar.simulate.embedding import input_tokens, vector_for
from sidecar.simulate.faults import HTTP_FAULT_STATUS, Fault
from sidecar.simulate.profile import SimProfile
from sidecar.simulate.reply import LOGPROBS_REFUSED, Tool, choose_tool, output_for
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

OLLAMA_VERSION: Final = "0.13.0"
# The length of a simulated embedding when the request asks for none (nomic-embed-text's).
EMBED_DIMENSIONS: Final = 768
_NDJSON: Final = {"Content-Type": "application/x-ndjson"}
_FAULT_MESSAGES: Final = {
    "http_500": (
        "model runner has unexpectedly stopped, this may be due to resource limitations or an "
        "internal error, check ollama server logs for details"
    ),
    "http_503": "server busy, please try again.  maximum pending requests exceeded",
    "http_429": "too many requests (simulated rate limit)",
}
_ERROR_LINE: Final = b'{"error":"simulated failure"}\n'
_ARCH: Final = "llama"
_MODEL_SIZE: Final = 4_920_753_328
_DETAILS: Final = {
    "parent_model": "",
    "format": "gguf",
    "family": _ARCH,
    "families": [_ARCH],
    "parameter_size": "8.0B",
    "quantization_level": "Q4_K_M",
}


class OllamaSimulator(Simulator):
    """`POST /api/chat`, `POST /api/embed` (and the legacy `/api/embeddings`), `GET /api/tags`,
    `GET /api/ps`, `POST /api/show`, `GET /api/version`, `GET|HEAD /`.

    Any model name is served unless `models` is given, and then `/api/tags` and `/api/ps`
    list those models from the start (else only the ones asked for so far, as pulls would
    appear); `context_length` is what `/api/ps` reports as allocated (and `num_ctx` in
    `/api/show`), `trained_context_length` the model's maximum in `/api/show`'s `model_info`.
    """

    def __init__(
        self,
        profile: SimProfile | None = None,
        fault: Fault | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] | None = None,
        context_length: int = 8192,
        trained_context_length: int = 131072,
    ) -> None:
        names = None if models is None else [_full_name(m) for m in models]
        super().__init__(profile, fault, host=host, port=port, models=names)
        self.context_length = context_length
        self.trained_context_length = trained_context_length

    @property
    def base_url(self) -> str:
        return self.root_url

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/chat", self._chat_endpoint),
            web.post("/api/generate", self._chat_endpoint),
            web.post("/api/embed", self._embed),
            web.post("/api/embeddings", self._embeddings),
            web.get("/api/tags", self._tags),
            web.get("/api/ps", self._ps),
            web.post("/api/show", self._show),
            web.get("/api/version", self._version),
            web.get("/", self._root),
        ]

    # ----- chat ----------------------------------------------------------------------------

    async def _parse_chat(self, request: web.Request) -> ChatCall | web.StreamResponse:
        body = await self._read_body(request)
        model = self._model_of(body.get("model"))
        if request.path == "/api/generate":
            return self._parse_generate(body, model)
        messages = body.get("messages")
        if messages is None:
            messages = []
        if not isinstance(messages, list):
            raise WireError(400, "messages: expected an array of messages")
        stream = body.get("stream")
        if stream is None:
            stream = True  # Ollama streams unless told not to
        if not isinstance(stream, bool):
            raise WireError(400, "stream: expected true or false")
        if not messages:
            # Real Ollama loads (or, with keep_alive 0, unloads) the model and answers at once.
            reason = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
            return json_response(
                {
                    "model": model,
                    "created_at": _now_rfc3339(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": reason,
                    "done": True,
                }
            )
        if body.get("logprobs") or body.get("top_logprobs") is not None:
            raise WireError(400, LOGPROBS_REFUSED)
        options = body.get("options")
        return ChatCall(
            model=model,
            stream=stream,
            max_tokens=_num_predict(options),
            prompt_tokens=prompt_tokens(messages),
            tool=choose_tool(_tools(body.get("tools")), messages, forced=None, allowed=True),
            output=output_for(None, messages, ollama_format=body.get("format")),
            seed=options.get("seed") if isinstance(options, dict) else None,
        )

    def _model_of(self, model: object) -> str:
        if not isinstance(model, str) or not model:
            raise WireError(400, "model is required")
        if not self._knows(_full_name(model)):
            raise WireError(404, f"model '{model}' not found")
        return model

    def _error_response(self, error: WireError) -> web.Response:
        return json_response({"error": error.message}, status=error.status, headers=error.headers)

    def _fault_error(self, fault: Fault) -> WireError:
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.kind == "http_429" else None
        # Ollama has no overloaded status of its own: it says it is busy.
        kind = "http_503" if fault.kind == "http_529" else fault.kind
        return WireError(HTTP_FAULT_STATUS[kind], _FAULT_MESSAGES[kind], headers=headers)

    def _parse_generate(self, body: dict[str, Any], model: str) -> ChatCall:
        """`/api/generate`: a `prompt` (and `system`), answered in `response` frames."""
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            raise WireError(400, "prompt: expected a string")
        stream = body.get("stream")
        if stream is None:
            stream = True
        if not isinstance(stream, bool):
            raise WireError(400, "stream: expected true or false")
        turns = [{"role": "user", "content": prompt}]
        return ChatCall(
            model=model,
            stream=stream,
            max_tokens=_num_predict(body.get("options")),
            prompt_tokens=prompt_tokens(turns),
            output=output_for(None, turns, ollama_format=body.get("format")),
            text=True,
        )

    def _stream_headers(self, call: ChatCall) -> dict[str, str]:
        return dict(_NDJSON)

    def _head_frames(self, call: ChatCall) -> Sequence[bytes]:
        return ()

    def _body_frames(self, call: ChatCall, answer: Answer) -> Iterator[bytes]:
        if call.tool is not None:
            yield (
                orjson.dumps(
                    {
                        "model": call.model,
                        "created_at": _now_rfc3339(),
                        "message": _message("", call, answer),
                        "done": False,
                    }
                )
                + b"\n"
            )
            return
        head = b'{"model":%s,"created_at":%s,"message":{"role":"assistant","content":' % (
            orjson.dumps(call.model),
            orjson.dumps(_now_rfc3339()),
        )
        tail = b'},"done":false}\n'
        if call.text:
            head = b'{"model":%s,"created_at":%s,"response":' % (
                orjson.dumps(call.model),
                orjson.dumps(_now_rfc3339()),
            )
            tail = b',"done":false}\n'
        if answer.pieces is not None:
            for piece in answer.pieces:
                yield head + orjson.dumps(piece) + tail
            return
        # Token text is plain ASCII with no JSON escapes, so it can be spliced in as bytes.
        for index in range(answer.tokens):
            yield b'%s"tok%d "%s' % (head, index, tail)

    def _tail_frames(
        self, exchange: Exchange, call: ChatCall, answer: Answer, sent: int
    ) -> Sequence[bytes]:
        final = self._final(exchange, call, answer, content="", eval_count=_eval_count(call, sent))
        return (orjson.dumps(final) + b"\n",)

    def _completion(self, exchange: Exchange, call: ChatCall, answer: Answer) -> bytes:
        final = self._final(
            exchange,
            call,
            answer,
            content=answer.text,
            eval_count=_eval_count(call, answer.tokens),
        )
        return orjson.dumps(final)

    def _final(
        self, exchange: Exchange, call: ChatCall, answer: Answer, *, content: str, eval_count: int
    ) -> dict[str, Any]:
        now = time.monotonic_ns()
        message = _message(content, call, answer)
        if call.stream:
            message.pop("tool_calls", None)  # a stream sent them in its body frames
        said: dict[str, Any] = {"response": content} if call.text else {"message": message}
        return {
            "model": call.model,
            "created_at": _now_rfc3339(),
            **said,
            "done": True,
            "done_reason": "length" if answer.capped else "stop",
            "total_duration": max(1, now - exchange.started_ns),
            "load_duration": max(1, exchange.parsed_ns - exchange.started_ns),
            "prompt_eval_count": call.prompt_tokens,
            "prompt_eval_duration": max(1, exchange.first_token_ns - exchange.parsed_ns),
            "eval_count": eval_count,
            "eval_duration": max(1, now - exchange.first_token_ns),
        }

    def _garbage_frame(self, call: ChatCall) -> bytes:
        return b'{"model":%s,"message":{"role":"assistant","content":\n' % orjson.dumps(call.model)

    def _error_frame(self) -> bytes:
        return _ERROR_LINE

    # ----- introspection -------------------------------------------------------------------

    # ----- embeddings ----------------------------------------------------------------------

    async def _embed(self, request: web.Request) -> web.Response:
        """`/api/embed`: `input` a string or a list of strings, optional `dimensions`."""
        started = time.monotonic_ns()
        try:
            body = await self._read_body(request)
            model = self._model_of(body.get("model"))
            raw = body.get("input")
            inputs = [raw] if isinstance(raw, str) else raw
            if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
                raise WireError(400, "invalid input type")
            dimensions = body.get("dimensions") or EMBED_DIMENSIONS
            if not isinstance(dimensions, int) or dimensions < 1:
                raise WireError(400, "dimensions must be a positive integer")
            failure = await self._embed_fault()
            if failure is not None:
                raise failure
        except WireError as err:
            return self._error_response(err)
        self._seen_models.setdefault(_full_name(model))
        elapsed = time.monotonic_ns() - started
        return json_response(
            {
                "model": model,
                "embeddings": [vector_for(text, dimensions) for text in inputs],
                "total_duration": elapsed,
                "load_duration": 0,
                "prompt_eval_count": sum(input_tokens(text) for text in inputs),
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        """The legacy `/api/embeddings`: one `prompt`, one `embedding`."""
        try:
            body = await self._read_body(request)
            self._model_of(body.get("model"))
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise WireError(400, "prompt must be a string")
            failure = await self._embed_fault()
            if failure is not None:
                raise failure
        except WireError as err:
            return self._error_response(err)
        return json_response({"embedding": vector_for(prompt, EMBED_DIMENSIONS)})

    async def _tags(self, request: web.Request) -> web.Response:
        modified = datetime.now(UTC).isoformat()
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": modified,
                "size": _MODEL_SIZE,
                "digest": _digest(name),
                "details": _DETAILS,
            }
            for name in self._listed_names()
        ]
        return json_response({"models": models})

    async def _ps(self, request: web.Request) -> web.Response:
        expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        models = [
            {
                "name": name,
                "model": name,
                "size": _MODEL_SIZE,
                "digest": _digest(name),
                "details": _DETAILS,
                "expires_at": expires,
                "size_vram": _MODEL_SIZE,
                "context_length": self.context_length,
            }
            for name in self._listed_names()
        ]
        return json_response({"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        try:
            body = await self._read_json(request)
            model = self._model_of(body.get("model") or body.get("name"))  # "name" is legacy
        except WireError as err:
            return self._error_response(err)
        return json_response(
            {
                "modelfile": f"# Modelfile generated by the llm-sidecar simulator\nFROM {model}\n",
                "parameters": f'num_ctx {self.context_length}\nstop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _DETAILS,
                "model_info": {
                    "general.architecture": _ARCH,
                    "general.parameter_count": 8_030_261_248,
                    f"{_ARCH}.context_length": self.trained_context_length,
                },
                "capabilities": ["completion", "tools"],
                "modified_at": datetime.now(UTC).isoformat(),
            }
        )

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": OLLAMA_VERSION})

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        """A JSON object body that is not a chat (so not counted in stats)."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as err:
            raise WireError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(body, dict):
            raise WireError(400, "request body must be a JSON object")
        return body

    def _listed_names(self) -> list[str]:
        return list(dict.fromkeys(_full_name(m) for m in self._listed_models()))


def _full_name(model: str) -> str:
    """Ollama's canonical name: a missing tag means ":latest"."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _num_predict(options: object) -> int | None:
    if options is None:
        return None
    if not isinstance(options, dict):
        raise WireError(400, "options: expected an object")
    value = options.get("num_predict")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(400, f"options.num_predict: expected an integer, got {value!r}")
    return None if value < 0 else value  # -1 (and -2) mean no limit


def _tools(tools: object) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise WireError(400, "tools: expected an array")
    out = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise WireError(400, f"tools[{index}].function.name: missing")
        parameters = function.get("parameters") if isinstance(function, dict) else None
        out.append(Tool(name, parameters if isinstance(parameters, dict) else {}))
    return out


def _message(content: str, call: ChatCall, answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if call.tool is not None:
        function = {"index": 0, "name": call.tool.name, "arguments": answer.arguments or {}}
        message["tool_calls"] = [{"id": "call_sim_0", "function": function}]
    return message


def _eval_count(call: ChatCall, sent: int) -> int:
    return TOOL_CALL_TOKENS if call.tool is not None else sent


def _now_rfc3339() -> str:
    """RFC 3339 with nanoseconds, as Go's time.Time marshals."""
    now = time.time_ns()
    seconds, nanos = divmod(now, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()
