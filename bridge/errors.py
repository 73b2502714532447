"""HTTP errors in OpenAI's shape, and the mapping from the sidecar's error codes.

    HttpError                 one error response: status, OpenAI body fields, extra headers
    http_error(SidecarError)  the HttpError an engine or remote-sidecar failure becomes

Statuses are chosen so the OpenAI SDK raises the class a caller expects:
400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413 APIStatusError,
429 RateLimitError, 5xx InternalServerError. A spend cap that has no room is a 429
with LiteLLM's type `budget_exceeded` and `x-should-retry: false` (no retry-after
unless the cap resets within the hour). A privacy refusal (FAILED_PRECONDITION)
is a 400, the canonical mapping of that code: the request as sent can never be
served and retrying it is pointless, while a 403 would send the caller looking
for a problem with their key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from sidecar.errors import ErrorCode, SidecarError

# (status, OpenAI error type, OpenAI error code) per sidecar error code.
_BY_CODE: dict[ErrorCode, tuple[int, str, str | None]] = {
    ErrorCode.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorCode.FAILED_PRECONDITION: (400, "invalid_request_error", "failed_precondition"),
    ErrorCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    ErrorCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
    ErrorCode.DEADLINE_EXCEEDED: (504, "server_error", "timeout"),
    # Today only an upstream that spoke garbage raises INTERNAL: a bad gateway.
    ErrorCode.INTERNAL: (502, "server_error", "bad_gateway"),
    ErrorCode.UNIMPLEMENTED: (501, "server_error", "not_implemented"),
}


class HttpError(Exception):
    """An error response; `param` names the request field at fault, when there is one."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = tuple(headers)

    def body(self) -> bytes:
        return orjson.dumps({"error": self.payload()})

    def payload(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


def bad_request(param: str | None, message: str, code: str | None = None) -> HttpError:
    return HttpError(400, message, param=param, code=code)


def http_error(exc: SidecarError) -> HttpError:
    """The response a failed call becomes, with its field, kind and retry-after."""
    if exc.kind == "budget_exceeded":
        return _budget_error(exc)
    status, type_, code = _BY_CODE.get(exc.code, (500, "server_error", None))
    param = exc.field
    if exc.code is ErrorCode.NOT_FOUND:
        param = "model"
    elif code is None:
        code = exc.kind
    headers: list[tuple[bytes, bytes]] = []
    retry_after = exc.retry_after
    if retry_after is not None and status in (429, 503):
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    return HttpError(status, exc.message, type_=type_, param=param, code=code, headers=headers)


def _budget_error(exc: SidecarError) -> HttpError:
    if exc.retry_after is None:
        # Not transient: the OpenAI SDKs read this header and do not retry.
        headers = [(b"x-should-retry", b"false")]
    else:
        headers = [(b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode())]
    # LiteLLM's shape: its type, and the status as the code.
    return HttpError(429, exc.message, type_="budget_exceeded", code="429", headers=headers)
