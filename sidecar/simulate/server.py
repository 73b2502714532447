"""The part every simulated upstream shares: lifecycle, faults, pacing, stats and control.

A simulator owns one aiohttp application behind one TCP listener. Each protocol subclass
parses its own chat request into a `ChatCall` and renders frames; this base decides the
fault, draws the pacing, writes the frames at that pace and breaks the stream on purpose.

Disconnects are noticed through aiohttp's handler cancellation: when the client goes away
the handler task is cancelled wherever it waits (the first-token wait, a gap between
tokens, a hang), and the CancelledError path records it.

Control endpoints, for simulators run in another process:
    POST /_sim/config  {"profile": "name" | {...}, "fault": {...} | null}  (either key optional)
    GET  /_sim/stats   counters; `?bodies=1` adds the last request bodies
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler

from sidecar.hostport import host_port
from sidecar.simulate.faults import (
    HTTP_FAULT_STATUS,
    Fault,
    FaultSwitch,
    fault_from_json,
    fault_to_json,
)
from sidecar.simulate.profile import (
    Pacing,
    SimProfile,
    answer_text,
    profile_from_json,
    profile_to_json,
)
from sidecar.simulate.reply import JsonOutput, Tool, arguments, generator, json_text, pieces

BODY_HISTORY: Final = 100
# Bodies of 100K-token chats run to megabytes; aiohttp's default cap is 1 MiB.
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
# Seconds stop() waits for cancelled handlers and idle connections to wind down.
STOP_GRACE: Final = 1.0
# Completion tokens reported for an answer that is a tool call rather than text.
TOOL_CALL_TOKENS: Final = 1
_JSON: Final = "application/json"


@dataclass(slots=True)
class SimStats:
    """What a simulator has seen. Counters cover chat requests only."""

    requests: int = 0
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=BODY_HISTORY))
    in_flight: int = 0
    completed: int = 0
    disconnects: int = 0
    last_disconnect_at: float | None = None
    # Tokens of the answers that reached their end (what a provider would bill for them).
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The W3C traceparent header of the latest chat requests that carried one.
    traceparents: deque[str] = field(default_factory=lambda: deque(maxlen=BODY_HISTORY))
    # Embedding requests (/api/embed, /v1/embeddings), counted apart from chats.
    embed_requests: int = 0

    def to_json(self, *, include_bodies: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "completed": self.completed,
            "disconnects": self.disconnects,
            "last_disconnect_at": self.last_disconnect_at,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if include_bodies:
            out["bodies"] = list(self.bodies)
        return out


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A chat request reduced to what the simulator's answer depends on."""

    model: str
    stream: bool
    max_tokens: int | None
    prompt_tokens: int
    tool: Tool | None = None  # the tool to call instead of answering with text
    output: JsonOutput | None = None  # the JSON the answer must be, if any
    seed: int | None = None  # the request's seed: the same one gives the same answer
    include_usage: bool = False
    reply_id: str = ""  # for protocols whose every frame repeats the reply's identity
    created: int = 0  # unix seconds, likewise
    # A text completion (Ollama's /api/generate, OpenAI's legacy /v1/completions): the
    # answer is text in that endpoint's frames.
    text: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    tokens: int  # text tokens to send (0 for a tool call)
    capped: bool  # the request's max tokens cut the answer short
    pacing: Pacing
    # The text's pieces when it is generated (JSON); None for the profile's tokN text.
    pieces: tuple[str, ...] | None = None
    arguments: dict[str, Any] | None = None  # of the tool call, when there is one

    @property
    def text(self) -> str:
        return answer_text(self.tokens) if self.pieces is None else "".join(self.pieces)


class WireError(Exception):
    """An error response, in whatever shape the protocol renders it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


@dataclass(slots=True)
class Exchange:
    """One chat request in flight and the clock readings its final frame reports."""

    request: web.Request
    started_ns: int = field(default_factory=time.monotonic_ns)
    parsed_ns: int = 0
    first_token_ns: int = 0
    resp: web.StreamResponse | None = None
    dropped: bool = False  # the simulator closed the connection itself


class Simulator(ABC):
    """Base of the protocol simulators. Use `async with` or `await start()` / `await stop()`."""

    def __init__(
        self,
        profile: SimProfile | None = None,
        fault: Fault | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] | None = None,
    ) -> None:
        self.host = host
        self.stats = SimStats()
        self._port = port
        self._profile = profile if profile is not None else SimProfile()
        self._rng = random.Random(self._profile.seed)
        self._switch = FaultSwitch(fault)
        self._fault_timer: asyncio.Task[None] | None = None
        self._explicit_models = tuple(models) if models is not None else None
        self._seen_models: dict[str, None] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._handlers: dict[asyncio.Task[Any], Exchange] = {}
        self._stopping = False

    # ----- configuration -------------------------------------------------------------------

    @property
    def profile(self) -> SimProfile:
        return self._profile

    @profile.setter
    def profile(self, profile: SimProfile) -> None:
        self._profile = profile
        self._rng = random.Random(profile.seed)

    @property
    def fault(self) -> Fault | None:
        return self._switch.fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        if _refuses(fault) or _refuses(self._switch.fault):
            raise ValueError("a 'refuse' fault changes the listener: use await sim.set_fault()")
        self._arm(fault)

    async def set_fault(self, fault: Fault | None) -> None:
        """Arm `fault` (None clears it); for `refuse`, stop or resume listening on the port."""
        await self._install(fault)

    # ----- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://{host_port(self.host, self._port)}"

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The URL a client library is given."""

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already running on {self.root_url}")
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._gate()])
        app.add_routes(self._routes())
        app.add_routes(
            [web.post("/_sim/config", self._config_endpoint), web.get("/_sim/stats", self._stats)]
        )
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=STOP_GRACE
        )
        await runner.setup()
        self._runner = runner
        self._stopping = False
        try:
            # Bind even when refusing, so that port 0 becomes a real port to come back to.
            await self._listen()
            if _refuses(self._switch.fault):
                await self._unlisten()
            self._arm_timer(self._switch.fault)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        self._cancel_fault_timer()
        handlers = set(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=STOP_GRACE)
        self._site = None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        self._site = site
        self._port = site.port

    async def _unlisten(self, keep: RequestHandler | None = None) -> None:
        """Stop listening and close every connection: the idle ones now (a pooled keep-alive
        connection would otherwise still be served), the busy ones after their reply."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        server = self._runner.server if self._runner is not None else None
        if server is None:
            return
        busy = {exchange.request.protocol for exchange in self._handlers.values()}
        if keep is not None:
            busy.add(keep)
        for connection in server.connections:
            if connection in busy:
                connection.close()
            else:
                connection.force_close()

    def _gate(self) -> Middleware:
        """A middleware hanging up on requests that slip in while refusing: on a connection
        accepted just before the listener closed, which `_unlisten` could not sweep yet."""

        @web.middleware
        async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            if _refuses(self._switch.fault) and not request.path.startswith("/_sim/"):
                request.protocol.force_close()
                return web.Response(status=503)  # never sent: the transport is gone
            return await handler(request)

        return gate

    # ----- faults --------------------------------------------------------------------------

    async def _install(self, fault: Fault | None, keep: RequestHandler | None = None) -> None:
        """Arm `fault`, changing the listener if needed; `keep` is the connection of the
        control request doing this, which must live to carry the reply."""
        was_refusing, refusing = _refuses(self._switch.fault), _refuses(fault)
        running = self._runner is not None
        # Listen again before the fault reads as cleared, so that `sim.fault` never claims
        # a server that is not accepting yet.
        if running and was_refusing and not refusing:
            await self._listen()
        self._arm(fault)
        if running and refusing and not was_refusing:
            await self._unlisten(keep)

    def _arm(self, fault: Fault | None) -> None:
        self._cancel_fault_timer()
        self._switch = FaultSwitch(fault)
        if self._runner is not None:
            self._arm_timer(fault)

    def _arm_timer(self, fault: Fault | None) -> None:
        if fault is not None and fault.duration is not None:
            self._fault_timer = asyncio.get_running_loop().create_task(self._expire(fault))

    async def _expire(self, fault: Fault) -> None:
        assert fault.duration is not None
        await asyncio.sleep(fault.duration)
        self._fault_timer = None  # so that clearing does not cancel the task doing it
        if self._switch.fault is fault:
            await self._install(None)

    def _cancel_fault_timer(self) -> None:
        timer, self._fault_timer = self._fault_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    # ----- the chat path -------------------------------------------------------------------

    async def _chat_endpoint(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        exchange = Exchange(request)
        self._handlers[task] = exchange
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        traceparent = request.headers.get("traceparent")
        if traceparent is not None:
            stats.traceparents.append(traceparent)
        try:
            resp = await self._chat(exchange)
        except asyncio.CancelledError:
            if not (self._stopping or exchange.dropped):
                self._note_disconnect()
            raise
        except ConnectionResetError:
            # Writing to a client that already left; aiohttp finishes the reply quietly.
            self._note_disconnect()
            return exchange.resp if exchange.resp is not None else web.Response(status=499)
        finally:
            stats.in_flight -= 1
            del self._handlers[task]
        if not exchange.dropped:
            stats.completed += 1
        return resp

    def _note_disconnect(self) -> None:
        self.stats.disconnects += 1
        self.stats.last_disconnect_at = time.monotonic()

    async def _chat(self, exchange: Exchange) -> web.StreamResponse:
        try:
            parsed = await self._parse_chat(exchange.request)
        except WireError as err:
            return self._error_response(err)
        exchange.parsed_ns = time.monotonic_ns()
        if isinstance(parsed, web.StreamResponse):
            return parsed
        self._seen_models.setdefault(parsed.model)
        fault = self._switch.draw()
        if fault is not None and fault.kind in HTTP_FAULT_STATUS:
            return self._error_response(self._fault_error(fault))
        if fault is not None and fault.kind == "hang":
            await asyncio.get_running_loop().create_future()  # until the client goes away
        answer = self._plan(parsed)
        if parsed.stream:
            return await self._stream(exchange, parsed, answer, fault)
        return await self._once(exchange, parsed, answer, fault)

    def _plan(self, call: ChatCall) -> Answer:
        pacing = Pacing.draw(self._profile, self._rng)
        rng = generator(call.seed, self._rng)
        if call.tool is not None:
            return Answer(0, False, pacing, arguments=arguments(call.tool, rng))
        parts = None
        if call.output is not None:
            parts = pieces(json_text(call.output, rng, self._profile.answer_tokens))
        tokens = self._profile.answer_tokens if parts is None else len(parts)
        if call.max_tokens is not None and call.max_tokens < tokens:
            kept = max(call.max_tokens, 0)
            return Answer(kept, True, pacing, None if parts is None else parts[:kept])
        return Answer(tokens, False, pacing, parts)

    async def _stream(
        self, exchange: Exchange, call: ChatCall, answer: Answer, fault: Fault | None
    ) -> web.StreamResponse:
        if answer.pacing.ttft > 0:
            await asyncio.sleep(answer.pacing.ttft)
        exchange.first_token_ns = time.monotonic_ns()
        resp = web.StreamResponse(headers=self._stream_headers(call))
        exchange.resp = resp
        await resp.prepare(exchange.request)
        for frame in self._head_frames(call):
            await resp.write(frame)
        limit = fault.after_tokens if fault is not None else None
        sent = await _write_paced(resp, self._body_frames(call, answer), answer.pacing.gap, limit)
        if fault is not None:
            await self._break(exchange, resp, call, fault)
            return resp
        for frame in self._tail_frames(exchange, call, answer, sent):
            await resp.write(frame)
        self._count(call, sent)
        return resp

    async def _once(
        self, exchange: Exchange, call: ChatCall, answer: Answer, fault: Fault | None
    ) -> web.StreamResponse:
        pacing = answer.pacing
        if pacing.ttft > 0:
            await asyncio.sleep(pacing.ttft)
        exchange.first_token_ns = time.monotonic_ns()
        if pacing.gap is not None and answer.tokens > 1:
            await asyncio.sleep(pacing.gap * (answer.tokens - 1))
        if fault is None:
            self._count(call, answer.tokens)
            return web.Response(body=self._completion(exchange, call, answer), content_type=_JSON)
        if fault.kind == "drop":
            _drop(exchange)
            return web.Response()
        if fault.kind == "malformed":
            return web.Response(body=self._garbage_frame(call), content_type=_JSON)
        return self._error_response(WireError(500, "simulated failure", type_="server_error"))

    def _count(self, call: ChatCall, sent: int) -> None:
        self.stats.prompt_tokens += call.prompt_tokens
        self.stats.completion_tokens += TOOL_CALL_TOKENS if call.tool is not None else sent

    async def _break(
        self, exchange: Exchange, resp: web.StreamResponse, call: ChatCall, fault: Fault
    ) -> None:
        if fault.kind == "drop":
            _drop(exchange)
        elif fault.kind == "malformed":
            await resp.write(self._garbage_frame(call))
        else:
            await resp.write(self._error_frame())

    # ----- protocol hooks ------------------------------------------------------------------

    @abstractmethod
    def _routes(self) -> list[web.RouteDef]:
        """The protocol's endpoints; the chat one must be `self._chat_endpoint`."""

    @abstractmethod
    async def _parse_chat(self, request: web.Request) -> ChatCall | web.StreamResponse:
        """The call to answer, or a complete response that is not an answer; WireError if bad."""

    @abstractmethod
    def _error_response(self, error: WireError) -> web.Response: ...

    @abstractmethod
    def _fault_error(self, fault: Fault) -> WireError:
        """The error an HTTP fault (`HTTP_FAULT_STATUS`) sends."""

    @abstractmethod
    def _stream_headers(self, call: ChatCall) -> dict[str, str]: ...

    @abstractmethod
    def _head_frames(self, call: ChatCall) -> Sequence[bytes]:
        """Frames before the answer (the fault's `after_tokens` does not count them)."""

    @abstractmethod
    def _body_frames(self, call: ChatCall, answer: Answer) -> Iterator[bytes]:
        """The answer: one frame per text token, or the tool-call frames."""

    @abstractmethod
    def _tail_frames(
        self, exchange: Exchange, call: ChatCall, answer: Answer, sent: int
    ) -> Sequence[bytes]:
        """Frames after the answer; `sent` is how many body frames went out."""

    @abstractmethod
    def _completion(self, exchange: Exchange, call: ChatCall, answer: Answer) -> bytes:
        """The whole non-streamed reply body."""

    @abstractmethod
    def _garbage_frame(self, call: ChatCall) -> bytes:
        """A frame the protocol's parser cannot read."""

    @abstractmethod
    def _error_frame(self) -> bytes:
        """The protocol's mid-stream error frame."""

    # ----- helpers for subclasses ----------------------------------------------------------

    async def _embed_fault(self) -> WireError | None:
        """Count an embedding request and apply the armed fault to it: an error status,
        or a hang until the client leaves; other faults concern streams only."""
        self.stats.embed_requests += 1
        fault = self._switch.draw()
        if fault is not None and fault.kind in HTTP_FAULT_STATUS:
            return self._fault_error(fault)
        if fault is not None and fault.kind == "hang":
            await asyncio.get_running_loop().create_future()  # until the client goes away
        return None

    async def _read_body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object, also kept in `stats.bodies`; WireError(400) otherwise."""
        raw = await request.read()
        if not raw:
            raise WireError(400, "missing request body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise WireError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(body, dict):
            raise WireError(400, "request body must be a JSON object")
        self.stats.bodies.append(body)
        return body

    def _knows(self, model: str) -> bool:
        return self._explicit_models is None or model in self._explicit_models

    def _listed_models(self) -> list[str]:
        """The explicit model list, or else every model asked for so far."""
        if self._explicit_models is not None:
            return list(self._explicit_models)
        return list(self._seen_models)

    # ----- control endpoints ---------------------------------------------------------------

    async def _config_endpoint(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object with 'profile' and/or 'fault'")
            unknown = set(body) - {"profile", "fault"}
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
            profile = profile_from_json(body["profile"]) if "profile" in body else self.profile
            fault = fault_from_json(body["fault"]) if "fault" in body else self.fault
        except (ValueError, TypeError) as err:
            return json_response({"error": str(err)}, status=400)
        if profile is not self.profile:
            self.profile = profile
        if fault is not self.fault:
            await self._install(fault, keep=request.protocol)
        return json_response(
            {"profile": profile_to_json(self.profile), "fault": fault_to_json(self.fault)}
        )

    async def _stats(self, request: web.Request) -> web.Response:
        bodies = request.query.get("bodies", "") not in ("", "0", "false")
        return json_response(self.stats.to_json(include_bodies=bodies))


async def _write_paced(
    resp: web.StreamResponse, frames: Iterable[bytes], gap: float | None, limit: int | None
) -> int:
    """Write up to `limit` frames, `gap` seconds apart on a fixed schedule; return the count."""
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    for frame in frames:
        if limit is not None and sent >= limit:
            break
        if sent and gap is not None:
            # Against a schedule rather than sleeping `gap` each time, so oversleeps do not add up.
            delay = start + sent * gap - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await resp.write(frame)
        sent += 1
    return sent


def _drop(exchange: Exchange) -> None:
    exchange.dropped = True
    transport = exchange.request.transport
    if transport is not None:
        # close(), not abort(): what was already written still reaches the client, then EOF
        # arrives in the middle of the chunked body.
        transport.close()


def _refuses(fault: Fault | None) -> bool:
    return fault is not None and fault.kind == "refuse"


def json_response(
    payload: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=_JSON, headers=headers
    )


def prompt_tokens(messages: Iterable[object]) -> int:
    """A rough prompt size: characters of all message text // 4, at least 1."""
    chars = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return max(1, chars // 4)
