"""The master key on the gRPC door: `authorization: Bearer <key>` metadata, as gRPC does it.

With `general_settings.master_key` set, every call needs it (Router, reflection,
anything registered later) except the standard health service, which probes
and load balancers call without credentials. The key is compared in constant
time, so it cannot be guessed byte by byte from response times. A call without
it is answered UNAUTHENTICATED before its request is even decoded.

An authenticated call costs one metadata scan: the interceptor hands back the
method's own handler unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import grpc

_OPEN: Final = "/grpc.health.v1.Health/"
_MISSING: Final = "no API key: send the metadata 'authorization: Bearer <master key>'"
_WRONG: Final = "incorrect API key provided"
_TWICE: Final = "more than one authorization metadata entry; send exactly one"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class MasterKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, master_key: str) -> None:
        self._key = master_key.encode()

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN):
            return handler
        problem = self.problem(details.invocation_metadata or ())
        return handler if problem is None else _refusal(handler, problem)

    def problem(self, metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
        """Why these call metadata are not authorized, or None when they are."""
        given = [value for key, value in metadata if key == "authorization"]
        if not given:
            return _MISSING
        if len(given) > 1:
            return _TWICE
        value = given[0]
        raw = value.encode() if isinstance(value, str) else value
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
            return _WRONG
        return None


def _refusal(handler: grpc.RpcMethodHandler, problem: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
        yield  # an async generator, as grpc.aio wants for streaming answers

    # No deserializer: the request of a refused call is never decoded.
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse_stream)


def interceptors(master_key: str | None) -> list[grpc.aio.ServerInterceptor]:
    """The gRPC server's interceptors for this configuration (none without a key)."""
    return [MasterKeyInterceptor(master_key)] if master_key else []
