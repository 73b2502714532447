"""The handlers of the Messages door: parse, relay through bridge/exchange.py, render.

`count_tokens` asks the engine's routing plan (over gRPC in the standalone bridge)
for its prompt estimate, plus an estimate of the tools' definitions, which the plan
does not count. It never calls an upstream, so the figure is an estimate whatever
deployment would serve the request: the `x-sidecar-token-count` header says so.
"""

from __future__ import annotations

from typing import Final

import orjson

from bridge.asgi import JSON, Receive, Send
from bridge.backend import Backend
from bridge.exchange import (
    Call,
    CallHead,
    Keepalive,
    as_http_error,
    read_request,
    relay_complete,
    relay_stream,
    request_id,
    send_body,
    send_error,
    with_caller,
)
from bridge.messages.parse import parse_count, parse_messages
from bridge.messages.render import PING, MessagesStream, error_shape, message_body
from sidecar.engine import estimate_tokens
from sidecar.types import ChatResponse

# A silent stream gets a ping this often, so that proxies and clients with read
# timeouts do not take a long think for a dead connection.
PING_INTERVAL: Final = 10.0


class MessagesDoor:
    def __init__(
        self, backend: Backend, max_body_bytes: int, ping_interval: float = PING_INTERVAL
    ) -> None:
        self._backend = backend
        self._max_body_bytes = max_body_bytes
        self._keepalive = Keepalive(PING, ping_interval)

    async def create(self, receive: Receive, send: Send, head: CallHead) -> None:
        """POST /v1/messages."""
        rid = request_id(head.request_id)
        ids = _id_headers(rid)
        parsed = await read_request(
            receive,
            send,
            head,
            self._max_body_bytes,
            lambda body: parse_messages(body, rid),
            error_shape,
            ids,
        )
        if parsed is None:
            return
        request = with_caller(parsed.request, head.credential)
        call = Call(request, None, head.passed_on, ids)
        message_id = f"msg_{rid}"
        if parsed.stream:
            encoder = MessagesStream(message_id, request.model)
            await relay_stream(
                self._backend, receive, send, call, encoder, error_shape, self._keepalive
            )
        else:

            def render(answer: ChatResponse) -> bytes:
                return message_body(message_id, request.model, answer)

            await relay_complete(self._backend, receive, send, call, render, error_shape)

    async def count_tokens(self, receive: Receive, send: Send, head: CallHead) -> None:
        """POST /v1/messages/count_tokens."""
        rid = request_id(head.request_id)
        ids = _id_headers(rid)
        counted = await read_request(
            receive,
            send,
            head,
            self._max_body_bytes,
            lambda body: parse_count(body, rid),
            error_shape,
            ids,
        )
        if counted is None:
            return
        request = with_caller(counted, head.credential)
        try:
            tokens, provider = await self._backend.prompt_estimate(request, head.passed_on)
        except Exception as exc:
            await send_error(send, as_http_error(exc, f"count_tokens {rid}"), error_shape, *ids)
            return
        tools = request.extra.get("tools")
        if tools:
            tokens += estimate_tokens(orjson.dumps(tools).decode())
        headers = [JSON, *ids, (b"x-sidecar-token-count", b"estimate")]
        if provider:
            headers.append((b"x-sidecar-provider", provider.encode()))
        await send_body(send, 200, orjson.dumps({"input_tokens": tokens}), headers)


def _id_headers(rid: str) -> tuple[tuple[bytes, bytes], ...]:
    """The request id under the sidecar's name and Anthropic's."""
    value = rid.encode()
    return ((b"x-request-id", value), (b"request-id", value))
