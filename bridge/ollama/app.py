"""Ollama's API as an ASGI app over the same Backend as the OpenAI door.

    POST /api/chat          NDJSON stream (the default) or one object
    POST /api/generate      one chat turn (`system` + `prompt`), Ollama's generate shape
    POST /api/embed         a batch of vectors; /api/embeddings, the legacy one-prompt form
    GET  /api/tags          every alias, as an installed model (`alias:latest`)
    POST /api/show          an alias's details and capabilities
    GET  /api/ps            the aliases that can answer now, as loaded models
    GET  /api/version       the Ollama API version this door speaks
    GET  /                  "Ollama is running"

Errors are Ollama's `{"error": "..."}` with the status the OpenAI door would send;
after a stream began, a last `{"error": ...}` line (with no `done`), as Ollama ends
a stream that failed. With a master key configured every endpoint but `/` and
`/api/version` needs it (`Authorization: Bearer <key>`; the `ollama` Python client
sends `OLLAMA_API_KEY` that way), since this door reaches the same cloud models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import orjson

from bridge import spend
from bridge.app import BridgeSettings, Head, authorize
from bridge.asgi import JSON, ClientGone, Receive, Scope, Send, read_body
from bridge.backend import AnswerStream, Backend
from bridge.errors import HttpError
from bridge.exchange import as_http_error, route_headers, send_body, watched
from bridge.exchange import request_id as request_id_of
from bridge.ollama.parse import (
    ParsedChat,
    alias_of,
    is_load_request,
    parse_chat,
    parse_embed,
    parse_embeddings,
    parse_generate,
)
from bridge.ollama.render import (
    OLLAMA_VERSION,
    LineWriter,
    Timing,
    error_line,
    load_reply,
    now_rfc3339,
    ps_body,
    show_body,
    tags_body,
    whole_reply,
)
from bridge.parse import parse_body
from sidecar.redaction import clip, shown
from sidecar.types import ModelStatus

_NDJSON: Final = (b"content-type", b"application/x-ndjson")
_OPEN_PATHS: Final = frozenset({"/", "/api/version"})
# What /api/ps reports as a loaded model's expiry: Ollama's default keep-alive from now.
_KEEP_ALIVE: Final = timedelta(minutes=5)

Handler = Callable[[Scope, Receive, Send, Head], Awaitable[None]]
T = TypeVar("T")


class OllamaApp:
    """The ASGI application; `draining` is set while its server stops."""

    def __init__(self, backend: Backend, settings: BridgeSettings | None = None) -> None:
        self._backend = backend
        self.settings = settings or BridgeSettings()
        key = self.settings.master_key
        self._key = key.encode() if key else None
        self.draining = False
        self._started = now_rfc3339()
        self._routes: dict[str, tuple[str, Handler]] = {
            "/api/chat": ("POST", self._chat),
            "/api/generate": ("POST", self._generate),
            "/api/embed": ("POST", self._embed),
            "/api/embeddings": ("POST", self._embeddings),
            "/api/tags": ("GET", self._tags),
            "/api/show": ("POST", self._show),
            "/api/ps": ("GET", self._ps),
            "/api/version": ("GET", self._version),
            "/": ("GET", self._root),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        head = Head.read(scope)
        try:
            if path not in _OPEN_PATHS:
                authorize(head, self._key)
            found = self._routes.get(path)
            if found is None:
                raise HttpError(404, f"no endpoint at {shown(path)}")
            method, handler = found
            asked = scope["method"]
            if asked != method and not (asked == "HEAD" and method == "GET"):
                raise HttpError(
                    405,
                    f"{clip(asked, 20)} is not allowed on {path}; use {method}",
                    headers=[(b"allow", method.encode())],
                )
            await handler(scope, receive, send, head)
        except HttpError as err:
            await send_error(send, err)
        except Exception as exc:
            await send_error(send, as_http_error(exc, f"{clip(scope['method'], 20)} {shown(path)}"))

    # -- chat and generate -------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        await self._answer(receive, send, head, generate=False)

    async def _generate(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        await self._answer(receive, send, head, generate=True)

    async def _answer(self, receive: Receive, send: Send, head: Head, *, generate: bool) -> None:
        read = await self._read(receive, send, head, parse_generate if generate else parse_chat)
        if read is None:
            return
        parsed, id_header = read
        _with_caller(parsed.request.metadata, head)
        if is_load_request(parsed):
            await self._find(parsed.request.model, head)  # 404 for a model it does not have
            reply = load_reply(parsed.model, generate=generate)
            await send_body(send, 200, reply, [JSON, id_header])
        elif parsed.stream:
            await self._stream(receive, send, head, parsed, id_header, generate=generate)
        else:
            await self._whole(receive, send, head, parsed, id_header, generate=generate)

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        head: Head,
        parsed: ParsedChat,
        id_header: tuple[bytes, bytes],
        *,
        generate: bool,
    ) -> None:
        request = parsed.request
        stream: AnswerStream | None = None
        started = False
        async with watched(receive, request.request_id) as watch:
            try:
                writer = LineWriter(parsed.model, generate=generate)
                stream = self._backend.stream(request, parsed.timeout, head.passed_on)
                first = await stream.__anext__()
                headers = [_NDJSON, *route_headers(stream.route), id_header]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                started = True
                line = writer.chunk(first)
                if line:
                    await send({"type": "http.response.body", "body": line, "more_body": True})
                async for chunk in stream:
                    line = writer.chunk(chunk)
                    if line:
                        await send({"type": "http.response.body", "body": line, "more_body": True})
                watch.close()
                await send({"type": "http.response.body", "body": writer.end(), "more_body": False})
            except Exception as exc:
                err = as_http_error(exc, f"request {request.request_id}")
                watch.close()
                if started:
                    last = error_line(err.message)
                    await send({"type": "http.response.body", "body": last, "more_body": False})
                else:
                    await send_error(send, err, id_header)
            finally:
                if stream is not None:
                    await stream.aclose()

    async def _whole(
        self,
        receive: Receive,
        send: Send,
        head: Head,
        parsed: ParsedChat,
        id_header: tuple[bytes, bytes],
        *,
        generate: bool,
    ) -> None:
        request = parsed.request
        timing = Timing()
        async with watched(receive, request.request_id) as watch:
            try:
                answer = await self._backend.complete(request, parsed.timeout, head.passed_on)
                timing.first = timing.started
                body = whole_reply(
                    parsed.model,
                    generate=generate,
                    text=answer.content,
                    reasoning=answer.reasoning,
                    calls=answer.tool_calls,
                    finish=answer.finish_reason,
                    usage=answer.usage,
                    timing=timing,
                )
                watch.close()
                await send_body(send, 200, body, [JSON, *route_headers(answer.route), id_header])
            except Exception as exc:
                watch.close()
                await send_error(
                    send, as_http_error(exc, f"request {request.request_id}"), id_header
                )

    # -- embeddings --------------------------------------------------------------------

    async def _embed(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        await self._embedding(receive, send, head, legacy=False)

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        await self._embedding(receive, send, head, legacy=True)

    async def _embedding(self, receive: Receive, send: Send, head: Head, *, legacy: bool) -> None:
        read = await self._read(receive, send, head, parse_embeddings if legacy else parse_embed)
        if read is None:
            return
        parsed, id_header = read
        request = parsed.request
        request_id = request.request_id
        _with_caller(request.metadata, head)
        timing = Timing()
        async with watched(receive, request_id) as watch:
            try:
                answer = await self._backend.embed(request, parsed.timeout, head.passed_on)
                reply: dict[str, Any]
                if legacy:
                    reply = {"embedding": answer.vectors[0]}
                else:
                    reply = {
                        "model": parsed.model,
                        "embeddings": answer.vectors,
                        "total_duration": timing.counts(None)["total_duration"],
                        "load_duration": 0,
                        "prompt_eval_count": answer.usage.prompt_tokens or 0,
                    }
                watch.close()
                headers = [JSON, *route_headers(answer.route), id_header]
                await send_body(send, 200, orjson.dumps(reply), headers)
            except Exception as exc:
                watch.close()
                await send_error(send, as_http_error(exc, f"request {request_id}"), id_header)

    # -- models ------------------------------------------------------------------------

    async def _tags(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        models = await self._backend.models(head.passed_on)
        await send_body(send, 200, tags_body(models, self._started), [JSON])

    async def _ps(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        models = await self._backend.models(head.passed_on)
        expires = (datetime.now(UTC) + _KEEP_ALIVE).isoformat().replace("+00:00", "Z")
        await send_body(send, 200, ps_body(models, expires), [JSON])

    async def _show(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        body = parse_body(await self._body(receive, head))
        name = body.get("model") or body.get("name")  # `name` is Ollama's older key
        model = await self._find(alias_of(name), head)
        await send_body(send, 200, show_body(model, self._started), [JSON])

    async def _version(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        await send_body(send, 200, orjson.dumps({"version": OLLAMA_VERSION}), [JSON])

    async def _root(self, scope: Scope, receive: Receive, send: Send, head: Head) -> None:
        plain = (b"content-type", b"text/plain; charset=utf-8")
        await send_body(send, 200, b"Ollama is running", [plain])

    # -- helpers -----------------------------------------------------------------------

    async def _read(
        self, receive: Receive, send: Send, head: Head, parse: Callable[[dict[str, Any], str], T]
    ) -> tuple[T, tuple[bytes, bytes]] | None:
        """The body as `parse` reads it, and the x-request-id header to answer with; None
        when the body was refused (and answered) or the client left."""
        request_id = request_id_of(head.request_id)
        id_header = (b"x-request-id", request_id.encode())
        try:
            return parse(parse_body(await self._body(receive, head)), request_id), id_header
        except ClientGone:
            return None
        except HttpError as err:
            await send_error(send, err, id_header)
            return None

    async def _body(self, receive: Receive, head: Head) -> bytes:
        return await read_body(receive, head.content_length, self.settings.max_body_bytes)

    async def _find(self, alias: str, head: Head) -> ModelStatus:
        for model in await self._backend.models(head.passed_on):
            if model.name == alias:
                return model
        raise HttpError(404, f"model '{shown(alias)}' not found", param="model")


def _with_caller(metadata: dict[str, str], head: Head) -> None:
    """Per-caller caps: metadata.caller, else the caller's key (hashed)."""
    if head.credential:
        metadata.setdefault("caller", spend.key_caller(head.credential))


async def send_error(send: Send, err: HttpError, *extra: tuple[bytes, bytes]) -> None:
    """An error in Ollama's shape, `{"error": "..."}`, with the status and headers of `err`."""
    body = orjson.dumps({"error": err.message})
    await send_body(send, err.status, body, [JSON, *err.headers, *extra])
