"""A simulated OpenAI Chat Completions server (OpenAI's API reference, streaming
and not).

Streams are SSE `data: {chunk}` frames: a first chunk with `delta.role`, one chunk per
token, a finish chunk with an empty delta, a usage chunk with `choices: []` when
`stream_options.include_usage` is set (and then `usage: null` on every other chunk), and
`data: [DONE]`. Errors are `{"error": {"message", "type", "param", "code"}}`. What the
answer says (text, a tool call, JSON for `response_format`) is decided in reply.py;
`logprobs` and `top_logprobs` are refused with a 400.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from sidecar.simulate.embedding import input_tokens, vector_for
from sidecar.simulate.faults import HTTP_FAULT_STATUS, Fault
from sidecar.simulate.profile import SimProfile
from sidecar.simulate.reply import LOGPROBS_REFUSED, Tool, choose_tool, output_for, pieces
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

_SSE: Final = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_FINGERPRINT: Final = "fp_sim"
_DONE: Final = b"data: [DONE]\n\n"
_ERROR_FRAME: Final = (
    b'data: {"error":{"message":"simulated failure","type":"server_error",'
    b'"param":null,"code":null}}\n\n'
)
_MODEL_CREATED: Final = 1_715_367_049
# The length of a simulated embedding when the request asks for none
# (text-embedding-3-small's).
EMBED_DIMENSIONS: Final = 1536


class OpenAISimulator(Simulator):
    """`POST /v1/chat/completions`, `POST /v1/embeddings` and `GET /v1/models`.

    With `api_key` set, `/v1` requests need `Authorization: Bearer <api_key>`. Any model
    name is served unless `models` is given.
    """

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

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat_endpoint),
            web.post("/v1/completions", self._chat_endpoint),
            web.get("/v1/models", self._models),
            web.post("/v1/embeddings", self._embeddings),
        ]

    # ----- chat ----------------------------------------------------------------------------

    async def _parse_chat(self, request: web.Request) -> ChatCall:
        self._authorize(request)
        try:
            body = await self._read_body(request)
        except WireError as err:
            raise WireError(
                400,
                "We could not parse the JSON body of your request. The OpenAI API expects a "
                f"JSON payload ({err.message}).",
            ) from None
        model = self._model_of(body)
        if request.path == "/v1/completions":
            return _parse_completion(body, model)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise WireError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        stream = body.get("stream") or False
        if not isinstance(stream, bool):
            raise WireError(400, "Invalid type for 'stream': expected a boolean.", param="stream")
        if body.get("logprobs") or body.get("top_logprobs") is not None:
            raise WireError(400, LOGPROBS_REFUSED, param="logprobs", code="unsupported_parameter")
        seed = body.get("seed")
        return ChatCall(
            model=model,
            stream=stream,
            max_tokens=_max_tokens(body),
            prompt_tokens=prompt_tokens(messages),
            tool=_tool_to_call(body, messages),
            output=output_for(body.get("response_format"), messages),
            seed=seed if isinstance(seed, int) else None,
            include_usage=_include_usage(body.get("stream_options"), stream),
            reply_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
        )

    def _model_of(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(400, "you must provide a model parameter")
        if not self._knows(model):
            raise WireError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return model

    def _authorize(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("Authorization", "")
        if header != f"Bearer {self.api_key}":
            raise WireError(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _error_response(self, error: WireError) -> web.Response:
        payload = {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": error.param,
                "code": error.code,
            }
        }
        return json_response(payload, status=error.status, headers=error.headers)

    def _fault_error(self, fault: Fault) -> WireError:
        status = HTTP_FAULT_STATUS[fault.kind]
        if status == 429:
            return WireError(
                429,
                "Rate limit reached for requests (simulated).",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": f"{fault.retry_after:g}"},
            )
        if status in (503, 529):  # 529 is Anthropic's; OpenAI says overloaded with a 503
            return WireError(
                503, "The server is overloaded or not ready yet.", type_="server_error"
            )
        return WireError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type_="server_error",
        )

    def _stream_headers(self, call: ChatCall) -> dict[str, str]:
        return dict(_SSE)

    def _head_frames(self, call: ChatCall) -> Sequence[bytes]:
        if call.text:
            return ()  # a text_completion stream opens with its first text
        delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        return (_sse(_chunk(call, [_choice(delta)])),)

    def _body_frames(self, call: ChatCall, answer: Answer) -> Iterator[bytes]:
        if call.tool is not None:
            first = {
                "index": 0,
                "id": _call_id(),
                "type": "function",
                "function": {"name": call.tool.name, "arguments": ""},
            }
            yield _sse(_chunk(call, [_choice({"tool_calls": [first]})]))
            # Arguments arrive in fragments, as OpenAI streams them.
            for fragment in pieces(_arguments(answer)):
                rest = {"index": 0, "function": {"arguments": fragment}}
                yield _sse(_chunk(call, [_choice({"tool_calls": [rest]})]))
            return
        if answer.pieces is not None:
            for piece in answer.pieces:
                yield _sse(_chunk(call, [_choice({"content": piece})]))
            return
        if call.text:
            for piece in answer.pieces or [f"tok{i} " for i in range(answer.tokens)]:
                yield _sse(_chunk(call, [_text_choice(piece)]))
            return
        # Splice each token between constant bytes: the token text needs no JSON escaping,
        # and the chunk is otherwise the same every time.
        template = _chunk(call, [_choice({"content": "\x00"})])
        # rsplit: the placeholder is the last NUL, whatever the model name holds.
        head, tail = orjson.dumps(template).rsplit(b"\\u0000", 1)
        head = b"data: " + head
        tail += b"\n\n"
        for index in range(answer.tokens):
            yield b"%stok%d %s" % (head, index, tail)

    def _tail_frames(
        self, exchange: Exchange, call: ChatCall, answer: Answer, sent: int
    ) -> Sequence[bytes]:
        if call.text:
            finish = _text_choice("", finish_reason=_finish_reason(call, answer))
        else:
            finish = _choice({}, finish_reason=_finish_reason(call, answer))
        frames = [_sse(_chunk(call, [finish]))]
        if call.include_usage:
            completion = TOOL_CALL_TOKENS if call.tool is not None else sent
            usage_chunk = _chunk(call, [])
            usage_chunk["usage"] = _usage(call.prompt_tokens, completion)
            frames.append(_sse(usage_chunk))
        frames.append(_DONE)
        return frames

    def _completion(self, exchange: Exchange, call: ChatCall, answer: Answer) -> bytes:
        if call.text:
            return orjson.dumps(
                {
                    "id": call.reply_id,
                    "object": "text_completion",
                    "created": call.created,
                    "model": call.model,
                    "choices": [
                        _text_choice(answer.text, finish_reason=_finish_reason(call, answer))
                    ],
                    "usage": _usage(call.prompt_tokens, answer.tokens),
                    "system_fingerprint": _FINGERPRINT,
                }
            )
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if call.tool is not None else answer.text,
            "refusal": None,
            "annotations": [],
        }
        if call.tool is not None:
            message["tool_calls"] = [
                {
                    "id": _call_id(),
                    "type": "function",
                    "function": {"name": call.tool.name, "arguments": _arguments(answer)},
                }
            ]
        completion = TOOL_CALL_TOKENS if call.tool is not None else answer.tokens
        return orjson.dumps(
            {
                "id": call.reply_id,
                "object": "chat.completion",
                "created": call.created,
                "model": call.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _finish_reason(call, answer),
                    }
                ],
                "usage": _usage(call.prompt_tokens, completion),
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }
        )

    def _garbage_frame(self, call: ChatCall) -> bytes:
        return b'data: {"id":"chatcmpl-sim","object":"chat.completion.chunk","choices":[{\n\n'

    def _error_frame(self) -> bytes:
        return _ERROR_FRAME

    # ----- embeddings ----------------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.Response:
        """`/v1/embeddings`: a string, a list of strings, a token array or a list of them;
        `dimensions`, and `encoding_format` float or base64 (little-endian float32)."""
        try:
            self._authorize(request)
            body = await self._read_body(request)
            model = self._model_of(body)
            inputs = _embedding_inputs(body.get("input"))
            dimensions = body.get("dimensions") or EMBED_DIMENSIONS
            if not isinstance(dimensions, int) or dimensions < 1:
                raise WireError(400, "Invalid 'dimensions': expected a positive integer.")
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise WireError(
                    400,
                    "Invalid 'encoding_format': expected float or base64.",
                    param="encoding_format",
                )
            failure = await self._embed_fault()
            if failure is not None:
                raise failure
        except WireError as err:
            return self._error_response(err)
        self._seen_models.setdefault(model)
        data = []
        for index, item in enumerate(inputs):
            vector = vector_for(item, dimensions)
            embedding: Any = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(input_tokens(item) for item in inputs)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # ----- models --------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except WireError as err:
            return self._error_response(err)
        data = [
            {"id": name, "object": "model", "created": _MODEL_CREATED, "owned_by": "system"}
            for name in self._listed_models()
        ]
        return json_response({"object": "list", "data": data})


def _embedding_inputs(raw: Any) -> list[str | list[int]]:
    """The inputs of an embeddings request in OpenAI's four shapes."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(item, str) for item in raw):
            return list(raw)
        if all(isinstance(item, int) for item in raw):
            return [raw]
        if all(isinstance(item, list) and item for item in raw):
            return list(raw)
    raise WireError(
        400,
        "'input' must be a string, an array of strings, an array of tokens, "
        "or an array of token arrays.",
        param="input",
    )


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(400, f"Invalid type for '{key}': expected an integer.", param=key)
        if value < 1:
            raise WireError(
                400,
                f"Invalid '{key}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                param=key,
                code="integer_below_min_value",
            )
        return value
    return None


def _tool_to_call(body: dict[str, Any], messages: list[Any]) -> Tool | None:
    tools = body.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise WireError(400, "Invalid type for 'tools': expected an array.", param="tools")
    declared = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            param = f"tools[{index}].function.name"
            raise WireError(400, f"Missing required parameter: '{param}'.", param=param)
        parameters = function.get("parameters") if isinstance(function, dict) else None
        declared.append(Tool(name, parameters if isinstance(parameters, dict) else {}))
    choice = body.get("tool_choice")
    forced: str | None = None
    if choice == "required":
        forced = ""
    elif isinstance(choice, dict):
        function = choice.get("function")
        named = function.get("name") if isinstance(function, dict) else None
        forced = named if isinstance(named, str) else ""
    return choose_tool(declared, messages, forced=forced, allowed=choice != "none")


def _include_usage(options: object, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise WireError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    if not isinstance(options, dict):
        raise WireError(400, "Invalid type for 'stream_options'.", param="stream_options")
    return bool(options.get("include_usage", False))


def _parse_completion(body: dict[str, Any], model: str) -> ChatCall:
    """A legacy `/v1/completions` request: one `prompt` (a string, or a list of one)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise WireError(
            400, "Invalid 'prompt': this simulator takes one string prompt.", param="prompt"
        )
    if body.get("logprobs") is not None or body.get("echo"):
        raise WireError(400, LOGPROBS_REFUSED, param="logprobs", code="unsupported_parameter")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise WireError(400, "Invalid type for 'stream': expected a boolean.", param="stream")
    turns = [{"role": "user", "content": prompt}]
    seed = body.get("seed")
    return ChatCall(
        model=model,
        stream=stream,
        max_tokens=_max_tokens(body),
        prompt_tokens=prompt_tokens(turns),
        seed=seed if isinstance(seed, int) else None,
        include_usage=_include_usage(body.get("stream_options"), stream),
        reply_id=f"cmpl-{uuid.uuid4().hex[:24]}",
        created=int(time.time()),
        text=True,
    )


def _text_choice(text: str, *, finish_reason: str | None = None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _chunk(call: ChatCall, choices: list[dict[str, Any]]) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": call.reply_id,
        "object": "text_completion" if call.text else "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": choices,
    }
    if call.include_usage:
        chunk["usage"] = None
    return chunk


def _choice(delta: dict[str, Any], *, finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _finish_reason(call: ChatCall, answer: Answer) -> str:
    if call.tool is not None:
        return "tool_calls"
    return "length" if answer.capped else "stop"


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _arguments(answer: Answer) -> str:
    return orjson.dumps(answer.arguments or {}).decode()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
