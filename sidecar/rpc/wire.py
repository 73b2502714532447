"""The Router service registered with request decoders that cannot fail.

grpc.aio answers a request its deserializer raises on with UNKNOWN and the
protobuf library's text. These decoders hand the servicer an `Undecodable`
instead, which becomes INVALID_ARGUMENT naming the message type: for chat
requests in `codec.decode_request` (the first thing Chat, StreamChat and Route
call, so the hot path costs one try around the generated parser and nothing
more), for the other methods in a thin wrapper around the method.

The handlers are made from the service's descriptor, so a method added to the
proto is registered here without a change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.codec import Undecodable

_SERVICE = pb.DESCRIPTOR.services_by_name["Router"]
SERVICE_NAME = _SERVICE.full_name


def add_router(servicer: object, server: grpc.aio.Server) -> None:
    """What `add_RouterServicer_to_server` does, with tolerant request decoders.

    `servicer` has a coroutine (or async generator) method per method of the service."""
    handlers = {}
    for method in _SERVICE.methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        behavior = getattr(servicer, method.name)
        if request is not pb.ChatRequest:
            if method.client_streaming or method.server_streaming:
                raise TypeError(f"{method.full_name}: only unary methods are wrapped here")
            behavior = _refusing_undecodable(behavior)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        # A method whose answers come already serialized is registered without a
        # serializer: grpc.aio then sends the bytes as they are.
        preserialized = method.name in getattr(servicer, "PRESERIALIZED", ())
        handlers[method.name] = make(
            behavior,
            request_deserializer=_tolerant(request),
            response_serializer=None if preserialized else response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _tolerant(message: Any) -> Callable[[bytes], Any]:
    parse = message.FromString
    failed = Undecodable(message.DESCRIPTOR.full_name)

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return failed

    return decode


def _refusing_undecodable(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A unary method that answers an Undecodable request INVALID_ARGUMENT itself."""

    async def refusing(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid {request.message_type} message",
            )
        return await behavior(request, context)

    return refusing
