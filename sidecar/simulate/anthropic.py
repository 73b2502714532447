"""A simulated Anthropic Messages server (`POST /v1/messages`, `GET /v1/models`).

Streams are SSE with named events, each `data.type` equal to the event name:
`message_start` (input usage), per content block `content_block_start` / `_delta` /
`_stop`, a `ping`, `message_delta` (stop reason and cumulative usage) and
`message_stop`. Errors are `{"type":"error","error":{"type","message"},"request_id"}`;
the `http_529` fault answers `overloaded_error`, and `error_line` sends the
mid-stream `event: error` Anthropic sends after a 200.

Beyond the text and tool answers of reply.py:
- Thinking (`thinking: {"type":"enabled"}`): a `thinking` block with a signature comes
  first. A later request whose assistant turns carry thinking blocks is refused with
  a 400 unless each signature matches its text byte for byte, and a tool loop whose
  assistant turn lost its thinking block is refused too, as the API does.
- Prompt caching: with `cache_control` anywhere in the request, the system prompt and
  tools are the cached prefix: written (`cache_creation_input_tokens`) the first time
  it is seen, read (`cache_read_input_tokens`) after; `input_tokens` excludes both.
- Parallel tool calls: every declared tool the user's last words name is called,
  unless `disable_parallel_tool_use` is set.
- Stop reasons: `end_turn`, `max_tokens`, `stop_sequence` (a `tokN` the request
  lists), `tool_use`; a user message containing `[sim:stop_reason=X]` ends with X,
  so that `refusal`, `pause_turn` and unknown reasons can be tested.
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

from sidecar.simulate.faults import HTTP_FAULT_STATUS, Fault
from sidecar.simulate.profile import SimProfile, answer_token
from sidecar.simulate.reply import Tool, arguments, choose_tool, pieces
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
_ERROR_FRAME: Final = (
    b"event: error\n"
    b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
)
_PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP_OVERRIDE: Final = re.compile(r"\[sim:stop_reason=([a-z_]+)\]")
_THOUGHT: Final = "Let me think about what the user needs."
_MODEL_CREATED: Final = "2025-05-14T00:00:00Z"


@dataclass(frozen=True, slots=True)
class _Call(ChatCall):
    """What an Anthropic answer depends on beyond the shared `ChatCall`."""

    tools: tuple[Tool, ...] = ()  # every tool called, `tool` being the first
    thinking: bool = False
    stop_sequences: tuple[str, ...] = ()
    stop_override: str | None = None
    cache_read: int = 0
    cache_write: int = 0


class AnthropicSimulator(Simulator):
    """With `api_key` set, requests need `x-api-key: <api_key>` (or the key as a bearer
    token). Any model name is served unless `models` is given."""

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
        # Signs thinking blocks; a fresh key per simulator, like a real server's secret.
        self._secret = uuid.uuid4().bytes
        self._cached_prefixes: set[bytes] = set()

    @property
    def base_url(self) -> str:
        # The SDK's base URL is the host: it appends /v1/messages itself.
        return self.root_url

    def _routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._chat_endpoint), web.get("/v1/models", self._models)]

    def sign(self, thinking: str) -> str:
        digest = hmac.new(self._secret, thinking.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    # ----- chat ----------------------------------------------------------------------------

    async def _parse_chat(self, request: web.Request) -> ChatCall:
        self._authorize(request)
        body = await self._read_body(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(400, "model: Field required")
        if not self._knows(model):
            raise WireError(404, f"model: {model}", type_="not_found_error")
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise WireError(400, "max_tokens: Field required")
        if max_tokens < 1:
            raise WireError(400, "max_tokens: Input should be greater than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise WireError(400, "messages: Field required")
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                raise WireError(
                    400,
                    f"messages.{index}.role: Input should be 'user' or 'assistant'",
                )
        thinking = _thinking_enabled(body.get("thinking"))
        self._check_thinking(messages, thinking)
        tools = self._tools_to_call(body, messages)
        system = body.get("system")
        prefix_tokens, read, written = self._cache(body, system)
        stop = body.get("stop_sequences") or ()
        return _Call(
            model=model,
            stream=bool(body.get("stream")),
            max_tokens=max_tokens,
            prompt_tokens=prompt_tokens([*messages, {"content": system}]) + prefix_tokens,
            tool=tools[0] if tools else None,
            reply_id=f"msg_{uuid.uuid4().hex[:24]}",
            tools=tools,
            thinking=thinking,
            stop_sequences=tuple(s for s in stop if isinstance(s, str)),
            stop_override=_stop_override(messages),
            cache_read=read,
            cache_write=written,
        )

    def _authorize(self, request: web.Request) -> None:
        # The API takes the key as x-api-key or, as newer SDKs send it, a bearer token.
        headers = request.headers
        given = headers.get("x-api-key") or headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and given != self.api_key:
            raise WireError(401, "invalid x-api-key", type_="authentication_error")
        if not request.headers.get("anthropic-version"):
            raise WireError(400, "anthropic-version: header is required")

    def _check_thinking(self, messages: list[Any], enabled: bool) -> None:
        for index, message in enumerate(messages):
            content = message.get("content")
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "thinking":
                    signature = block.get("signature")
                    expected = self.sign(str(block.get("thinking", "")))
                    if not isinstance(signature, str) or not hmac.compare_digest(
                        signature, expected
                    ):
                        raise WireError(
                            400,
                            f"messages.{index}.content.0: Invalid `signature` in `thinking` block",
                        )
        assistant = [m for m in messages if m.get("role") == "assistant"]
        content = assistant[-1].get("content") if assistant else None
        if not enabled or not isinstance(content, list) or not content:
            return
        kinds = [b.get("type") for b in content if isinstance(b, dict)]
        if "tool_use" in kinds and kinds[0] not in ("thinking", "redacted_thinking"):
            raise WireError(
                400,
                "messages: Expected `thinking` or `redacted_thinking`, but found `tool_use`. "
                "When `thinking` is enabled, a final `assistant` message must start with a "
                "thinking block.",
            )

    def _tools_to_call(self, body: dict[str, Any], messages: list[Any]) -> tuple[Tool, ...]:
        raw = body.get("tools")
        if not raw:
            return ()
        if not isinstance(raw, list):
            raise WireError(400, "tools: Input should be a valid list")
        declared = []
        for index, tool in enumerate(raw):
            name = tool.get("name") if isinstance(tool, dict) else None
            schema = tool.get("input_schema") if isinstance(tool, dict) else None
            if not isinstance(name, str) or not name:
                raise WireError(400, f"tools.{index}.name: Field required")
            if not isinstance(schema, dict):
                raise WireError(400, f"tools.{index}.input_schema: Field required")
            declared.append(Tool(name, schema))
        choice = body.get("tool_choice") or {"type": "auto"}
        kind = choice.get("type") if isinstance(choice, dict) else None
        forced = {"any": "", "tool": str(choice.get("name", ""))}.get(str(kind))
        # choose_tool reads OpenAI-shaped turns: a user turn of tool results is a tool turn.
        shaped = [_openai_shaped(m) for m in messages]
        first = choose_tool(declared, shaped, forced=forced, allowed=kind != "none")
        if first is None:
            return ()
        if forced or (isinstance(choice, dict) and choice.get("disable_parallel_tool_use")):
            return (first,)
        words = _last_text(messages)
        named = tuple(t for t in declared if t.name in words)
        return named if len(named) > 1 else (first,)

    def _cache(self, body: dict[str, Any], system: object) -> tuple[int, int, int]:
        """(prefix tokens, tokens read from the cache, tokens written to it)."""
        prefix = orjson.dumps([system, body.get("tools")], option=orjson.OPT_SORT_KEYS)
        tokens = len(prefix) // 4 if (system or body.get("tools")) else 0
        if not tokens or b'"cache_control"' not in orjson.dumps(body):
            return tokens, 0, 0
        key = hashlib.sha256(prefix).digest()
        if key in self._cached_prefixes:
            return tokens, tokens, 0
        self._cached_prefixes.add(key)
        return tokens, 0, tokens

    def _error_response(self, error: WireError) -> web.Response:
        payload = {
            "type": "error",
            "error": {"type": error.type, "message": error.message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }
        return json_response(payload, status=error.status, headers=error.headers)

    def _fault_error(self, fault: Fault) -> WireError:
        status = HTTP_FAULT_STATUS[fault.kind]
        if status == 429:
            return WireError(
                429,
                "Number of request tokens has exceeded your per-minute rate limit (simulated)",
                type_="rate_limit_error",
                headers={"retry-after": f"{fault.retry_after:g}"},
            )
        if status in (503, 529):
            return WireError(529, "Overloaded", type_="overloaded_error")
        return WireError(500, "Internal server error", type_="api_error")

    def _stream_headers(self, call: ChatCall) -> dict[str, str]:
        return dict(_SSE)

    def _head_frames(self, call: ChatCall) -> Sequence[bytes]:
        own = _own(call)
        start = {
            "type": "message_start",
            "message": {
                "id": call.reply_id,
                "type": "message",
                "role": "assistant",
                "model": call.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**_input_usage(own), "output_tokens": 1},
            },
        }
        frames = [_event("message_start", start)]
        index = 0
        if own.thinking:
            frames += [
                _event(
                    "content_block_start", _block_start(0, {"type": "thinking", "thinking": ""})
                ),
                _event(
                    "content_block_delta",
                    _delta(0, {"type": "thinking_delta", "thinking": _THOUGHT}),
                ),
                _event(
                    "content_block_delta",
                    _delta(0, {"type": "signature_delta", "signature": self.sign(_THOUGHT)}),
                ),
                _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ]
            index = 1
        if call.tool is None:
            frames.append(
                _event("content_block_start", _block_start(index, {"type": "text", "text": ""}))
            )
        frames.append(_PING)
        return frames

    def _body_frames(self, call: ChatCall, answer: Answer) -> Iterator[bytes]:
        own = _own(call)
        first = 1 if own.thinking else 0
        if call.tool is not None:
            for offset, (tool, args) in enumerate(self._calls(own, answer)):
                index = first + offset
                block = {"type": "tool_use", "id": _tool_id(), "name": tool.name, "input": {}}
                yield _event("content_block_start", _block_start(index, block))
                yield _event("content_block_delta", _delta(index, _json_delta("")))
                for fragment in pieces(orjson.dumps(args).decode()):
                    yield _event("content_block_delta", _delta(index, _json_delta(fragment)))
                yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
            return
        for index in range(_text_tokens(own, answer)):
            delta = {"type": "text_delta", "text": answer_token(index)}
            yield _event("content_block_delta", _delta(first, delta))

    def _tail_frames(
        self, exchange: Exchange, call: ChatCall, answer: Answer, sent: int
    ) -> Sequence[bytes]:
        own = _own(call)
        frames = []
        if call.tool is None:
            index = 1 if own.thinking else 0
            frames.append(
                _event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        reason, sequence = _stop(own, answer)
        output = len(own.tools) * TOOL_CALL_TOKENS if call.tool is not None else sent
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            # Cumulative, as the API reports it: the input figures again, the output so far.
            "usage": {**_input_usage(own), "output_tokens": output + _thinking_tokens(own)},
        }
        frames.append(_event("message_delta", message_delta))
        frames.append(_event("message_stop", {"type": "message_stop"}))
        return frames

    def _completion(self, exchange: Exchange, call: ChatCall, answer: Answer) -> bytes:
        own = _own(call)
        content: list[dict[str, Any]] = []
        if own.thinking:
            content.append(
                {"type": "thinking", "thinking": _THOUGHT, "signature": self.sign(_THOUGHT)}
            )
        if call.tool is not None:
            content.extend(
                {"type": "tool_use", "id": _tool_id(), "name": tool.name, "input": args}
                for tool, args in self._calls(own, answer)
            )
            output = len(own.tools) * TOOL_CALL_TOKENS
        else:
            tokens = _text_tokens(own, answer)
            content.append(
                {"type": "text", "text": "".join(answer_token(i) for i in range(tokens))}
            )
            output = tokens
        reason, sequence = _stop(own, answer)
        return orjson.dumps(
            {
                "id": call.reply_id,
                "type": "message",
                "role": "assistant",
                "model": call.model,
                "content": content,
                "stop_reason": reason,
                "stop_sequence": sequence,
                "usage": {**_input_usage(own), "output_tokens": output + _thinking_tokens(own)},
            }
        )

    def _calls(self, call: _Call, answer: Answer) -> Iterator[tuple[Tool, dict[str, Any]]]:
        yield call.tools[0], answer.arguments or {}
        # The other parallel calls draw their arguments from the same request.
        rng = random.Random(call.reply_id)
        for tool in call.tools[1:]:
            yield tool, arguments(tool, rng)

    def _garbage_frame(self, call: ChatCall) -> bytes:
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":\n\n'

    def _error_frame(self) -> bytes:
        return _ERROR_FRAME

    # ----- models --------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except WireError as err:
            return self._error_response(err)
        data = [
            {"type": "model", "id": name, "display_name": name, "created_at": _MODEL_CREATED}
            for name in self._listed_models()
        ]
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        return json_response({"data": data, "has_more": False, "first_id": first, "last_id": last})


def _own(call: ChatCall) -> _Call:
    assert isinstance(call, _Call)  # this simulator's _parse_chat builds every call
    return call


def _thinking_enabled(config: object) -> bool:
    return isinstance(config, Mapping) and config.get("type") in ("enabled", "adaptive")


def _thinking_tokens(call: _Call) -> int:
    return len(_THOUGHT) // 4 if call.thinking else 0


def _input_usage(call: _Call) -> dict[str, int]:
    return {
        "input_tokens": call.prompt_tokens - call.cache_read - call.cache_write,
        "cache_creation_input_tokens": call.cache_write,
        "cache_read_input_tokens": call.cache_read,
    }


def _text_tokens(call: _Call, answer: Answer) -> int:
    """Tokens sent: those before a stop sequence, if one is among them (the API leaves
    the sequence itself out of the text)."""
    for index in range(answer.tokens):
        if answer_token(index).strip() in call.stop_sequences:
            return index
    return answer.tokens


def _stop(call: _Call, answer: Answer) -> tuple[str, str | None]:
    if call.stop_override is not None:
        return call.stop_override, None
    if call.tool is not None:
        return "tool_use", None
    sent = _text_tokens(call, answer)
    if sent < answer.tokens:
        return "stop_sequence", answer_token(sent).strip()
    return ("max_tokens" if answer.capped else "end_turn"), None


def _stop_override(messages: list[Any]) -> str | None:
    match = _STOP_OVERRIDE.search(_last_text(messages))
    return match.group(1) if match else None


def _last_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [b.get("text") for b in content if isinstance(b, dict)]
            return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _openai_shaped(message: Any) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return {"role": "tool", "content": ""}
    return {"role": message.get("role"), "content": content}


def _event(name: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _block_start(index: int, block: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _json_delta(partial: str) -> dict[str, str]:
    return {"type": "input_json_delta", "partial_json": partial}


def _tool_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"
