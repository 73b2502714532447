"""The OpenAI-compatible HTTP front door: a thin ASGI app over one Backend.

    POST /v1/chat/completions    streamed (SSE) or whole; the route in x-sidecar-* headers
    POST /v1/messages[/count_tokens]
                                  Anthropic's Messages API (bridge/messages)
    POST /v1/responses            OpenAI's Responses API, stateless (bridge/responses);
                                  GET /v1/responses/{id} says nothing is stored (404)
    POST /v1/embeddings          a batch of vectors, float or base64 (bridge/embeddings.py)
    POST /v1/completions         legacy text completions, streamed or whole (bridge/completions.py)
    GET  /v1/models[/{id}]        every alias, with whether it runs locally or in the cloud
    GET  /health                  each deployment as the sidecar knows it (no upstream calls)
    GET  /health/liveliness       the process answers (no key needed)
    GET  /health/readiness        calls can be served now (no key needed)
    GET  /spend/logs, /global/spend/logs, /global/spend/report, /global/spend
                                  spend in LiteLLM's shapes (bridge/spend.py)
    GET  /metrics                 Prometheus text (OpenMetrics when asked for); needs the
                                  key unless telemetry.metrics_open

A request's `traceparent` (and `tracestate`) header continues the caller's trace:
the span of a call it makes is its child.

The paths also answer without the /v1 prefix, as LiteLLM's do. A stream's
headers go out with its first chunk, so a call that fails before its first
token still gets a proper HTTP error status; after that, a failure ends the
stream with an error event and no [DONE].
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import orjson

from bridge import exchange, spend
from bridge.asgi import JSON, ClientGone, DisconnectWatch, Receive, Scope, Send, read_body
from bridge.backend import AnswerStream, Backend
from bridge.completions import ParsedCompletion, TextStreamWriter, parse_completion
from bridge.completions import completion_body as text_completion_body
from bridge.embeddings import embedding_body, parse_embedding
from bridge.errors import HttpError, http_error
from bridge.exchange import (
    SSE_HEADERS,
    Call,
    ErrorShape,
    Header,
    as_http_error,
    openai_shape,
    relay_complete,
    relay_stream,
    route_headers,
    send_body,
    send_error,
)
from bridge.messages import MessagesDoor
from bridge.messages.door import PING_INTERVAL
from bridge.messages.render import error_shape as messages_error_shape
from bridge.parse import ParsedChat, parse_body, parse_chat
from bridge.render import (
    StreamWriter,
    completion_body,
    error_frame,
    health_body,
    model_object,
    models_body,
)
from bridge.responses import ResponsesDoor
from bridge.responses.door import not_stored
from sidecar.config.model import Limits
from sidecar.engine import continue_trace
from sidecar.errors import SidecarError
from sidecar.redaction import clip, shown
from sidecar.types import ChatRequest, ChatResponse

log = logging.getLogger("bridge")

MiB: Final = 1024 * 1024
_OPEN_PATHS: Final = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness"})
_TRACE_HEADERS: Final = frozenset({b"traceparent", b"tracestate"})
MetricsSource = Callable[[str | None], tuple[bytes, str] | None]
# The prompts of one /v1/completions request that run at once.
_PROMPTS_AT_ONCE: Final = 8

Handler = Callable[[Scope, Receive, Send, "_Head"], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    # general_settings.master_key: when set, every endpoint but the probes needs it.
    master_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 8 * MiB
    # Connections, heads, bodies and keep-alive (bridge/protocol.py).
    limits: Limits = field(default_factory=Limits)
    # GET /metrics: renders the exposition for an Accept header; None: no such endpoint.
    metrics: MetricsSource | None = None
    metrics_open: bool = False  # GET /metrics without the key (telemetry.metrics_open)
    # Seconds of silence after which a Messages stream gets a `ping` event.
    ping_interval: float = PING_INTERVAL


# Headers that may carry the caller's key, in order of precedence: OpenAI's, Anthropic's,
# Azure's.
_KEY_HEADERS: Final = {
    b"authorization": "Authorization",
    b"x-api-key": "x-api-key",
    b"api-key": "api-key",
}
_TOKEN: Final = re.compile(rb"[\x21-\x7e]{1,4096}")


@dataclass(slots=True)
class _Head:
    """The request headers the app reads, found in one pass."""

    credential: bytes | None = None  # the key, from whichever header carried it
    credential_header: str = ""
    bearer: bool = True  # False when Authorization names another scheme
    duplicate: str | None = None  # a key header sent more than once
    content_length: int | None = None
    request_id: bytes | None = None
    trace: dict[str, str] | None = None  # traceparent / tracestate, when sent
    accept: str | None = None

    @classmethod
    def read(cls, scope: Scope) -> _Head:
        head = cls()
        keys: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name == b"content-length":
                head.content_length = int(value) if value.isdigit() else None
            elif name == b"x-request-id":
                head.request_id = value
            elif name in _TRACE_HEADERS:
                if head.trace is None:
                    head.trace = {}
                head.trace[name.decode()] = value.decode("latin-1")
            elif name == b"accept":
                head.accept = value.decode("latin-1")
            elif name in _KEY_HEADERS:
                if name in keys:
                    # Two keys are ambiguous (which one is checked, which one passed on?).
                    head.duplicate = _KEY_HEADERS[name]
                keys[name] = value
        if keys:
            head._credential(keys)
        return head

    def _credential(self, keys: dict[bytes, bytes]) -> None:
        for name, label in _KEY_HEADERS.items():
            value = keys.get(name)
            if value is None:
                continue
            self.credential_header = label
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                self.bearer = scheme.lower() == b"bearer"
                value = token
            self.credential = value.strip()
            return

    @property
    def passed_on(self) -> str | None:
        """The caller's key, for a backend that checks it again (a remote sidecar)."""
        key = self.credential
        if key is None or not self.bearer or not _TOKEN.fullmatch(key):
            return None  # not something gRPC metadata can carry: the sidecar will refuse
        return key.decode("ascii")


class BridgeApp:
    """The ASGI application. `draining` makes readiness fail while the server stops."""

    def __init__(self, backend: Backend, settings: BridgeSettings | None = None) -> None:
        self._backend = backend
        self.settings = settings or BridgeSettings()
        key = self.settings.master_key
        self._key = key.encode() if key else None
        self.draining = False
        self._started = int(time.time())
        self._open = _OPEN_PATHS | ({"/metrics"} if self.settings.metrics_open else set())
        self._routes: dict[str, tuple[str, Handler]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/embeddings": ("POST", self._embeddings),
            "/embeddings": ("POST", self._embeddings),
            "/v1/completions": ("POST", self._completions),
            "/completions": ("POST", self._completions),
            "/v1/models": ("GET", self._models),
            "/models": ("GET", self._models),
            "/health": ("GET", self._health),
            "/health/liveliness": ("GET", self._liveliness),
            "/health/liveness": ("GET", self._liveliness),
            "/health/readiness": ("GET", self._readiness),
            "/spend/logs": ("GET", self._spend_logs),
            "/global/spend/logs": ("GET", self._global_spend_logs),
            "/global/spend/report": ("GET", self._global_spend_report),
            "/global/spend": ("GET", self._global_spend),
            "/metrics": ("GET", self._metrics),
        }
        # The other protocols' doors (bridge/messages, bridge/responses), and the error
        # shape of each path that is not OpenAI's.
        self._shapes: dict[str, ErrorShape] = {}
        messages = MessagesDoor(backend, self.settings.max_body_bytes, self.settings.ping_interval)
        for prefix in ("/v1", ""):
            self._door(f"{prefix}/messages", messages.create, messages_error_shape)
            self._door(
                f"{prefix}/messages/count_tokens", messages.count_tokens, messages_error_shape
            )
        responses = ResponsesDoor(backend, self.settings.max_body_bytes)
        for prefix in ("/v1", ""):
            self._door(f"{prefix}/responses", responses.create)

    def _door(
        self,
        path: str,
        handler: Callable[[Receive, Send, _Head], Awaitable[None]],
        shape: ErrorShape = openai_shape,
    ) -> None:
        async def serve(scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
            await handler(receive, send, head)

        self._routes[path] = ("POST", serve)
        if shape is not openai_shape:
            self._shapes[path] = shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets; lifespan is off
        path: str = scope["path"]
        head = _Head.read(scope)
        try:
            if path not in self._open:
                self._authorize(head)
            method, handler = self._route(path)
            if scope["method"] != method:
                raise HttpError(
                    405,
                    f"{clip(scope['method'], 20)} is not allowed on {path}; use {method}",
                    code="method_not_allowed",
                    headers=[(b"allow", method.encode())],
                )
            # Every endpoint's calls continue the caller's trace (traceparent), if sent.
            with continue_trace(head.trace):
                await handler(scope, receive, send, head)
        except HttpError as err:
            await send_error(send, err, self._shapes.get(path, openai_shape))
        except Exception as exc:
            # Chat handlers answer every failure themselves and the others send only once
            # done, so no response has started here: say so in the door's shape, not plain
            # text.
            failure = as_http_error(exc, f"{clip(scope['method'], 20)} {shown(path)}")
            await send_error(send, failure, self._shapes.get(path, openai_shape))

    def _route(self, path: str) -> tuple[str, Handler]:
        found = self._routes.get(path)
        if found is not None:
            return found
        for prefix in ("/v1/models/", "/models/"):
            if path.startswith(prefix) and len(path) > len(prefix):
                return "GET", self._model
        for prefix in ("/v1/responses/", "/responses/"):
            if path.startswith(prefix) and len(path) > len(prefix):
                return "GET", self._stored_response
        raise HttpError(404, f"no endpoint at {shown(path)}", code="unknown_url")

    def _authorize(self, head: _Head) -> None:
        authorize(head, self._key)

    # -- chat ---------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        request_id = exchange.request_id(head.request_id)
        id_header = (b"x-request-id", request_id.encode())
        try:
            raw = await read_body(receive, head.content_length, self.settings.max_body_bytes)
            parsed = parse_chat(parse_body(raw), request_id)
            parsed = dataclasses.replace(
                parsed, request=exchange.with_caller(parsed.request, head.credential)
            )
        except ClientGone:
            return
        except HttpError as err:
            await send_error(send, err, openai_shape, id_header)
            return
        if parsed.stream:
            await self._stream(receive, send, parsed, id_header, head.passed_on)
        else:
            await self._complete(receive, send, parsed, id_header, head.passed_on)

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        parsed: ParsedChat,
        id_header: tuple[bytes, bytes],
        credential: str | None,
    ) -> None:
        request = parsed.request
        writer = StreamWriter(
            f"chatcmpl-{request.request_id}", int(time.time()), request.model, parsed.include_usage
        )
        call = Call(request, parsed.timeout, credential, (id_header,))
        await relay_stream(self._backend, receive, send, call, writer)

    async def _complete(
        self,
        receive: Receive,
        send: Send,
        parsed: ParsedChat,
        id_header: tuple[bytes, bytes],
        credential: str | None,
    ) -> None:
        request = parsed.request

        def render(answer: ChatResponse) -> bytes:
            response_id = f"chatcmpl-{request.request_id}"
            return completion_body(response_id, int(time.time()), request.model, answer)

        call = Call(request, parsed.timeout, credential, (id_header,))
        await relay_complete(self._backend, receive, send, call, render)

    async def _stored_response(
        self, scope: Scope, receive: Receive, send: Send, head: _Head
    ) -> None:
        raise not_stored(scope["path"])

    async def _read(
        self, receive: Receive, send: Send, head: _Head, parse: Callable[[dict[str, Any], str], T]
    ) -> tuple[T, tuple[bytes, bytes]] | None:
        """The request body as `parse` reads it, and the x-request-id header to answer with;
        None when the body was refused (and answered) or the client left."""
        request_id = exchange.request_id(head.request_id)
        id_header = (b"x-request-id", request_id.encode())
        try:
            raw = await read_body(receive, head.content_length, self.settings.max_body_bytes)
            return parse(parse_body(raw), request_id), id_header
        except ClientGone:
            return None
        except HttpError as err:
            await send_error(send, err, openai_shape, id_header)
            return None

    # -- embeddings ---------------------------------------------------------------------

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        read = await self._read(receive, send, head, parse_embedding)
        if read is None:
            return
        parsed, id_header = read
        request = parsed.request
        request_id = request.request_id
        if head.credential:
            request.metadata.setdefault("caller", spend.key_caller(head.credential))
        async with exchange.watched(receive, request_id) as watch:
            try:
                answer = await self._backend.embed(request, parsed.timeout, head.passed_on)
                body = embedding_body(request.model, answer, as_base64=parsed.base64)
                watch.close()
                await send_body(send, 200, body, [JSON, *route_headers(answer.route), id_header])
            except Exception as exc:
                watch.close()
                await send_error(
                    send, as_http_error(exc, f"request {request_id}"), openai_shape, id_header
                )

    # -- legacy completions ---------------------------------------------------------------

    async def _completions(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        read = await self._read(receive, send, head, parse_completion)
        if read is None:
            return
        parsed, id_header = read
        if head.credential:
            for request in parsed.requests:
                request.metadata.setdefault("caller", spend.key_caller(head.credential))
        async with exchange.watched(receive, id_header[1].decode()) as watch:
            if parsed.stream:
                await self._stream_text(send, parsed, watch, id_header, head.passed_on)
            else:
                await self._complete_text(send, parsed, watch, id_header, head.passed_on)

    async def _complete_text(
        self,
        send: Send,
        parsed: ParsedCompletion,
        watch: DisconnectWatch,
        id_header: tuple[bytes, bytes],
        credential: str | None,
    ) -> None:
        """Every prompt's call, a few at a time; the first failure answers for all."""
        slots = asyncio.Semaphore(_PROMPTS_AT_ONCE)

        async def one(request: ChatRequest) -> ChatResponse:
            async with slots:
                return await self._backend.complete(request, parsed.timeout, credential)

        try:
            results = await asyncio.gather(
                *(one(r) for r in parsed.requests), return_exceptions=True
            )
            answers = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                answers.append(result)
            first = parsed.requests[0]
            body = text_completion_body(
                f"cmpl-{first.request_id}", int(time.time()), first.model, answers
            )
            watch.close()
            await send_body(send, 200, body, [JSON, *route_headers(answers[0].route), id_header])
        except Exception as exc:
            watch.close()
            err = as_http_error(exc, f"request {id_header[1].decode()}")
            await send_error(send, err, openai_shape, id_header)

    async def _stream_text(
        self,
        send: Send,
        parsed: ParsedCompletion,
        watch: DisconnectWatch,
        id_header: tuple[bytes, bytes],
        credential: str | None,
    ) -> None:
        """The prompts' answers one after the other, each choice under its index."""
        first = parsed.requests[0]
        writer = TextStreamWriter(
            f"cmpl-{first.request_id}", int(time.time()), first.model, parsed.include_usage
        )
        stream: AnswerStream | None = None
        started = False
        try:
            for index, request in enumerate(parsed.requests):
                stream = self._backend.stream(request, parsed.timeout, credential)
                chunk = await stream.__anext__()
                if not started:
                    headers = [*SSE_HEADERS, *route_headers(stream.route), id_header]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    started = True
                frames = writer.chunk(chunk, index)
                if frames:
                    await send({"type": "http.response.body", "body": frames, "more_body": True})
                async for chunk in stream:
                    frames = writer.chunk(chunk, index)
                    if frames:
                        await send(
                            {"type": "http.response.body", "body": frames, "more_body": True}
                        )
                closing: AnswerStream = stream
                stream = None
                await closing.aclose()
            watch.close()
            await send({"type": "http.response.body", "body": writer.end(), "more_body": False})
        except Exception as exc:
            watch.close()
            await _fail(send, exc, started, id_header)
        finally:
            if stream is not None:
                await stream.aclose()

    # -- models and health --------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        models = await self._call(self._backend.models(head.passed_on))
        await send_body(send, 200, models_body(models, self._started), [JSON])

    async def _model(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        name = scope["path"].partition("/models/")[2]
        models = await self._call(self._backend.models(head.passed_on))
        for model in models:
            if model.name == name:
                body = orjson.dumps(model_object(model, self._started))
                await send_body(send, 200, body, [JSON])
                return
        known = ", ".join(m.name for m in models) or "(none configured)"
        raise HttpError(
            404,
            f"unknown model {shown(name)}; known models: {known}",
            param="model",
            code="model_not_found",
        )

    async def _health(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        models = await self._call(self._backend.models(head.passed_on))
        budgets = await self._call(self._backend.budgets(head.passed_on))
        await send_body(send, 200, health_body(self._backend.mode, models, budgets), [JSON])

    # -- spend --------------------------------------------------------------------------

    async def _spend_logs(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        query, summarize = spend.logs_query(spend.query_params(scope["query_string"]))
        report = await self._call(self._backend.spend(query, head.passed_on))
        body = orjson.dumps(spend.logs_body(report, query, summarize))
        await send_body(send, 200, body, [JSON])

    async def _global_spend_logs(
        self, scope: Scope, receive: Receive, send: Send, head: _Head
    ) -> None:
        query = spend.global_query(spend.query_params(scope["query_string"]), time.time())
        report = await self._call(self._backend.spend(query, head.passed_on))
        await send_body(send, 200, orjson.dumps(spend.global_logs_body(report.daily)), [JSON])

    async def _global_spend_report(
        self, scope: Scope, receive: Receive, send: Send, head: _Head
    ) -> None:
        query, group_by = spend.report_query(spend.query_params(scope["query_string"]))
        report = await self._call(self._backend.spend(query, head.passed_on))
        body = orjson.dumps(spend.report_body(report.daily, group_by))
        await send_body(send, 200, body, [JSON])

    async def _global_spend(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        query = spend.global_query({}, time.time())
        report = await self._call(self._backend.spend(query, head.passed_on))
        cap = next((b.cap for b in report.budgets if b.budget == "global"), None)
        total = sum(d.spend for d in report.daily)
        await send_body(send, 200, orjson.dumps({"spend": total, "max_budget": cap}), [JSON])

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        source = self.settings.metrics
        rendered = None if source is None else source(head.accept)
        if rendered is None:
            raise HttpError(
                404,
                "no metrics here: telemetry.metrics is false, or this is a standalone bridge "
                "(scrape the sidecar itself, e.g. its --metrics-port)",
                code="unknown_url",
            )
        body, content_type = rendered
        await send_body(send, 200, body, [(b"content-type", content_type.encode())])

    async def _liveliness(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        await send_body(send, 200, b'"I\'m alive!"', [JSON])

    async def _readiness(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        reason = "shutting down" if self.draining else await self._backend.ready()
        if reason is None:
            body = orjson.dumps({"status": "healthy", "mode": self._backend.mode})
            await send_body(send, 200, body, [JSON])
        else:
            body = orjson.dumps(
                {"status": "unhealthy", "mode": self._backend.mode, "reason": reason}
            )
            await send_body(send, 503, body, [JSON])

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except SidecarError as exc:
            raise http_error(exc) from None


async def _fail(send: Send, exc: Exception, started: bool, id_header: Header) -> None:
    """A streamed call that failed: an error response, or once the stream began, its last
    event (an error, and no [DONE])."""
    err = exchange.as_http_error(exc, f"request {id_header[1].decode()}")
    if started:
        frame = error_frame(err.payload())
        await send({"type": "http.response.body", "body": frame, "more_body": False})
    else:
        await send_error(send, err, openai_shape, id_header)


def _unauthorized(message: str) -> HttpError:
    return HttpError(
        401,
        message,
        code="invalid_api_key",
        headers=[(b"www-authenticate", b"Bearer")],
    )


# -- shared with the other HTTP front doors (bridge/ollama/) ----------------------------
# One way to read the headers and check the key, whichever protocol the door speaks (the
# relays, call names and error mapping are bridge/exchange.py's).

Head = _Head


def authorize(head: _Head, key: bytes | None) -> None:
    """Refuse a duplicated key header, and with a master key (`key`) any other key."""
    if head.duplicate is not None:
        raise HttpError(
            400,
            f"the {head.duplicate} header was sent more than once; send one key, once",
            param=head.duplicate,
            code="duplicate_header",
        )
    if key is None:
        return
    if head.credential is None:
        raise _unauthorized(
            "no API key: send the header 'Authorization: Bearer <master key>' "
            "(or x-api-key / api-key: <master key>)"
        )
    # Constant time, so the key cannot be guessed byte by byte from response times.
    if not head.bearer or not hmac.compare_digest(head.credential, key):
        raise _unauthorized("incorrect API key provided")
