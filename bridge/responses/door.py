"""The handlers of the Responses door: parse, relay through bridge/exchange.py, render."""

from __future__ import annotations

import time

from bridge.asgi import Receive, Send
from bridge.backend import Backend
from bridge.errors import HttpError
from bridge.exchange import (
    Call,
    CallHead,
    read_request,
    relay_complete,
    relay_stream,
    request_id,
    with_caller,
)
from bridge.responses.parse import parse_response
from bridge.responses.render import ResponseShell, ResponsesStream, response_body
from sidecar.redaction import shown
from sidecar.types import ChatResponse


class ResponsesDoor:
    def __init__(self, backend: Backend, max_body_bytes: int) -> None:
        self._backend = backend
        self._max_body_bytes = max_body_bytes

    async def create(self, receive: Receive, send: Send, head: CallHead) -> None:
        """POST /v1/responses."""
        rid = request_id(head.request_id)
        ids = ((b"x-request-id", rid.encode()),)
        parsed = await read_request(
            receive,
            send,
            head,
            self._max_body_bytes,
            lambda body: parse_response(body, rid),
            headers=ids,
        )
        if parsed is None:
            return
        request = with_caller(parsed.request, head.credential)
        call = Call(request, None, head.passed_on, ids)
        shell = ResponseShell(rid, int(time.time()), request.model, parsed.echo)
        if parsed.stream:
            await relay_stream(self._backend, receive, send, call, ResponsesStream(shell))
        else:

            def render(answer: ChatResponse) -> bytes:
                return response_body(shell, answer)

            await relay_complete(self._backend, receive, send, call, render)


def not_stored(path: str) -> HttpError:
    """What GET /v1/responses/{id} answers: the sidecar keeps no responses."""
    response_id = path.rstrip("/").rpartition("/responses/")[2]
    return HttpError(
        404,
        f"response {shown(response_id)} not found: this gateway is stateless and stores no "
        "responses (store: true is accepted but nothing is kept)",
        param="response_id",
        code="response_not_found",
    )
