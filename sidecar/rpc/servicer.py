"""The gRPC front door: the Router service, health and reflection.

It holds no policy: it decodes the wire request, hands it to the engine with
the caller's remaining deadline, and encodes what comes back. A caller that
cancels or runs out of time makes grpc.aio cancel the handler task; the
engine's `finally` blocks then close the upstream request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from time import monotonic
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar.engine import Engine, continue_trace
from sidecar.errors import BudgetExceeded, ErrorCode, SidecarError
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.codec import (
    ERROR_KIND_KEY,
    ERROR_ORIGIN_KEY,
    chunk_bytes,
    decode_request,
    encode_models,
    encode_plan,
    encode_response,
    route_metadata,
)
from sidecar.rpc.embed_codec import decode_embed_request, encode_embed_response
from sidecar.rpc.health import HealthPublisher
from sidecar.rpc.process_codec import add_process
from sidecar.rpc.spend_codec import decode_query, encode_budget, encode_report
from sidecar.rpc.wire import add_router
from sidecar.types import ChatRequest

log = logging.getLogger("sidecar.rpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Router"].full_name
ERROR_DOMAIN = "llm-sidecar"
# The standard trailer carrying a google.rpc.Status with rich error details.
_DETAILS_KEY = "grpc-status-details-bin"

# A gRPC message costs grpc.aio about 0.1 ms of CPU however small it is (measured:
# benchmarks/door_cpu.py, text messages per stream against CPU per stream), so a fast
# upstream (a thousand tokens a second, or any upstream whose writes arrive split on a
# busy machine) would cost a core per ten streams relayed token by token. Tokens that
# arrive less than this apart are sent together, at most this late; the first token and
# any token after a pause go out at once.
COALESCE_WINDOW = 0.002

STATUS = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
}


class RouterServicer:
    """The Router service. Not the generated base class: StreamChat hands grpc.aio bytes,
    not ChatChunk messages, and add_router registers every method the proto declares."""

    # Methods whose answers are handed to grpc.aio already serialized (wire.py registers
    # them without a response serializer): a stream's chunks are mostly plain text, which
    # codec.chunk_bytes writes without building a protobuf message per chunk.
    PRESERIALIZED = frozenset({"StreamChat"})

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatResponse:
        try:
            chat = _decode(request)
            with continue_trace(_trace_context(context)):
                response = await self._engine.complete(chat, context.time_remaining())
        except SidecarError as exc:
            await _abort(context, exc)
        context.set_trailing_metadata(route_metadata(response.route))
        return encode_response(response)

    async def StreamChat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        try:
            with continue_trace(_trace_context(context)):
                stream = self._engine.stream(_decode(request), context.time_remaining())
        except SidecarError as exc:
            await _abort(context, exc)
        try:
            previous = 0.0
            async for chunk in stream:
                yield chunk_bytes(chunk)
                # grpc.aio resumes this generator once the message is sent. Chunks that
                # come closer together than the window are gathered for one window before
                # the next read: the next message then carries all that arrived meanwhile.
                now = monotonic()
                if now - previous < COALESCE_WINDOW:
                    await asyncio.sleep(COALESCE_WINDOW)
                    now = monotonic()  # the gap to the next chunk leaves this wait out
                previous = now
        except SidecarError as exc:
            await _abort(context, exc)
        finally:
            await stream.aclose()
            if stream.route is not None:
                context.set_trailing_metadata(route_metadata(stream.route))

    async def Route(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.RoutePlan:
        try:
            return encode_plan(self._engine.plan(_decode(request)))
        except SidecarError as exc:
            await _abort(context, exc)

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        try:
            embedding = decode_embed_request(request)
            if not embedding.request_id:
                embedding = dataclasses.replace(embedding, request_id=uuid.uuid4().hex)
            answer = await self._engine.embed(embedding, context.time_remaining())
        except SidecarError as exc:
            await _abort(context, exc)
        context.set_trailing_metadata(route_metadata(answer.route))
        return encode_embed_response(answer)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return add_process(encode_models(self._engine.models()), self._engine.process_status())

    async def GetSpend(
        self, request: pb.SpendRequest, context: grpc.aio.ServicerContext
    ) -> pb.SpendResponse:
        try:
            if request.budgets_only:
                budgets = await self._engine.budget_status()
                return pb.SpendResponse(budgets=[encode_budget(b) for b in budgets])
            return encode_report(await self._engine.spend(decode_query(request)))
        except SidecarError as exc:
            await _abort(context, exc)


def _trace_context(context: grpc.aio.ServicerContext) -> dict[str, str] | None:
    """The caller's W3C trace context (traceparent, tracestate) from the call's metadata."""
    found = None
    for key, value in context.invocation_metadata() or ():
        if key in ("traceparent", "tracestate") and isinstance(value, str):
            found = found or {}
            found[key] = value
    return found


def _decode(request: pb.ChatRequest) -> ChatRequest:
    return decode_request(request, assign_id=True)


async def _abort(context: grpc.aio.ServicerContext, exc: SidecarError) -> NoReturn:
    log.info("call failed: %s", exc.message)
    trailing: list[tuple[str, str | bytes]] = [(ERROR_ORIGIN_KEY, "sidecar")]
    if exc.retry_after is not None:
        # How long the caller should wait, as the HTTP bridge's retry-after header says it.
        trailing.append(("retry-after", f"{exc.retry_after:.3f}"))
    if exc.kind is not None:
        trailing.append((ERROR_KIND_KEY, exc.kind))
    if isinstance(exc, BudgetExceeded):
        trailing.append((_DETAILS_KEY, _budget_details(exc)))
    await context.abort(STATUS[exc.code], exc.message, tuple(trailing))
    raise AssertionError("context.abort returned")  # abort always raises


def _budget_details(exc: BudgetExceeded) -> bytes:
    """google.rpc.Status with ErrorInfo (BUDGET_EXHAUSTED), QuotaFailure and, only for a
    cap that resets soon, RetryInfo."""
    metadata = {"budget": exc.budget, "cap": f"{exc.cap:.6f}", "spent": f"{exc.spent:.6f}"}
    if exc.resets_at is not None:
        metadata["resets_at"] = f"{exc.resets_at:.0f}"
    details = [
        error_details_pb2.ErrorInfo(
            reason="BUDGET_EXHAUSTED", domain=ERROR_DOMAIN, metadata=metadata
        ),
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"budget:{exc.budget}", description=exc.message
                )
            ]
        ),
    ]
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=exc.message, details=packed
    )
    return status.SerializeToString()


async def add_services(server: grpc.aio.Server, engine: Engine) -> HealthPublisher:
    """Register Router, the standard health service and reflection on `server`."""
    add_router(RouterServicer(engine), server)  # undecodable requests: INVALID_ARGUMENT
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    publisher = HealthPublisher(health_servicer, engine, SERVICE_NAME)
    await publisher.publish()
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return publisher
