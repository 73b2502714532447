"""The backend for a bridge running alone in front of a sidecar reached over gRPC.

It speaks the same contract as any gRPC caller (proto/llmsidecar/v1/router.proto)
through the shared codec, and turns gRPC statuses back into the engine's error
codes, so the HTTP app answers exactly as it does in-process. The route comes
with the first chunk of a stream and with a unary answer.
"""

from __future__ import annotations

import re
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.errors import HttpError
from sidecar.errors import ErrorCode, SidecarError
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.rpc.codec import (
    ERROR_KIND_KEY,
    ERROR_ORIGIN_KEY,
    MAX_MESSAGE_BYTES,
    decode_chunk,
    decode_models,
    decode_response,
    encode_request,
)
from sidecar.rpc.embed_codec import decode_embed_response, encode_embed_request
from sidecar.rpc.spend_codec import decode_budget, decode_report, encode_query
from sidecar.rpc.tls import ClientTls, open_channel
from sidecar.types import (
    BudgetStatus,
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelStatus,
    RouteTaken,
    SpendQuery,
    SpendReport,
)

_CODES: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: ErrorCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: ErrorCode.UNAVAILABLE,
    # The sidecar cancels calls only when it shuts down: try again elsewhere or later.
    grpc.StatusCode.CANCELLED: ErrorCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED: ErrorCode.UNIMPLEMENTED,
}
# InvalidRequest messages start with the field they name ("messages[0].role: ...").
_FIELD: Final = re.compile(r"([A-Za-z_][\w.\[\]]*): ")
_METADATA_TIMEOUT: Final = 5.0
_HEALTH_TIMEOUT: Final = 2.0
# A unary answer can be long; gRPC's default 4 MiB receive limit is for requests.
_CHANNEL_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class RemoteError(SidecarError):
    """A failure the remote sidecar reported, with its code and, when known, the field."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.retry_after = retry_after
        self.kind = kind


class RemoteBackend:
    """The caller's key goes on to the sidecar as `authorization: Bearer` metadata, so a
    sidecar with a master key serves the bridge's callers as it serves its own."""

    mode = "remote"

    def __init__(self, target: str, tls: ClientTls | None = None) -> None:
        self.target = target
        self._tls = tls
        self._channel: Any = None
        self._stub: Any = None
        self._health: Any = None

    async def start(self) -> None:
        # grpc.aio binds a channel to the running loop, so it is made here, not in __init__.
        self._channel = open_channel(self.target, self._tls, _CHANNEL_OPTIONS)
        self._stub = pb_grpc.RouterStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def stream(
        self, request: ChatRequest, remaining: float | None, credential: str | None = None
    ) -> RemoteStream:
        call = self._stub.StreamChat(
            encode_request(request), timeout=remaining, metadata=_metadata(credential)
        )
        return RemoteStream(call, self.target)

    async def complete(
        self, request: ChatRequest, remaining: float | None, credential: str | None = None
    ) -> ChatResponse:
        try:
            answer = await self._stub.Chat(
                encode_request(request), timeout=remaining, metadata=_metadata(credential)
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, self.target) from None
        return decode_response(answer)

    async def embed(
        self, request: EmbeddingRequest, remaining: float | None, credential: str | None = None
    ) -> EmbeddingResponse:
        try:
            answer = await self._stub.Embed(
                encode_embed_request(request), timeout=remaining, metadata=_metadata(credential)
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, self.target) from None
        return decode_embed_response(answer)

    async def models(self, credential: str | None = None) -> tuple[ModelStatus, ...]:
        try:
            listed = await self._stub.ListModels(
                pb.ListModelsRequest(), timeout=_METADATA_TIMEOUT, metadata=_metadata(credential)
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, self.target) from None
        return decode_models(listed)

    async def spend(self, query: SpendQuery, credential: str | None = None) -> SpendReport:
        try:
            answer = await self._stub.GetSpend(
                encode_query(query), timeout=_METADATA_TIMEOUT, metadata=_metadata(credential)
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, self.target) from None
        return decode_report(answer)

    async def budgets(self, credential: str | None = None) -> tuple[BudgetStatus, ...]:
        request = encode_query(SpendQuery(), budgets_only=True)
        try:
            answer = await self._stub.GetSpend(
                request, timeout=_METADATA_TIMEOUT, metadata=_metadata(credential)
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, self.target) from None
        return tuple(decode_budget(b) for b in answer.budgets)

    async def prompt_estimate(
        self, request: ChatRequest, credential: str | None = None
    ) -> tuple[int, str]:
        try:
            route_plan = await self._stub.Route(
                encode_request(request), timeout=_METADATA_TIMEOUT, metadata=_metadata(credential)
            )
        except grpc.aio.AioRpcError as exc:
            raise remote_error(exc, self.target) from None
        first = route_plan.candidates[0].provider if route_plan.candidates else ""
        return route_plan.estimated_prompt_tokens, first

    async def ready(self) -> str | None:
        try:
            answer = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=_HEALTH_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            return f"sidecar at {self.target}: {exc.code().name}: {exc.details()}"
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            return f"sidecar at {self.target} reports {status}"
        return None

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


class RemoteStream:
    """A StreamChat call read chunk by chunk; closing it early cancels the call."""

    __slots__ = ("_call", "_done", "_target", "route")

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._target = target
        self._done = False
        self.route: RouteTaken | None = None

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._done:
            raise StopAsyncIteration
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._done = True
            raise remote_error(exc, self._target) from None
        if message is grpc.aio.EOF:
            self._done = True
            if self.route is None:
                raise RemoteError(
                    ErrorCode.INTERNAL, f"sidecar at {self._target} ended the stream with no answer"
                )
            raise StopAsyncIteration
        chunk = decode_chunk(message)
        if chunk.route is not None:
            self.route = chunk.route
        return chunk

    async def aclose(self) -> None:
        self._done = True
        if not self._call.done():
            self._call.cancel()


def _metadata(credential: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {credential}"),) if credential else None


def remote_error(exc: Any, target: str) -> SidecarError | HttpError:
    """The engine-side error a failed gRPC call stands for."""
    status = exc.code()
    details: str = exc.details() or status.name
    # What gRPC's library says itself (a link down, a message over the limit, a crash it
    # caught) is not passed on: the project's own words are. The sidecar's words are.
    if status is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        limit = MAX_MESSAGE_BYTES // (1024 * 1024)
        return HttpError(413, f"the request is too large for the sidecar (at most {limit} MiB)")
    if status is grpc.StatusCode.UNAUTHENTICATED:
        return HttpError(
            401,
            f"the sidecar at {target} refused the key: {details}",
            code="invalid_api_key",
            headers=[(b"www-authenticate", b"Bearer")],
        )
    code = _CODES.get(status)
    if status is grpc.StatusCode.INTERNAL:
        # The sidecar's own INTERNAL: an upstream that spoke garbage, in its words.
        return RemoteError(ErrorCode.INTERNAL, f"sidecar at {target}: {details}")
    if code is None:
        # UNKNOWN, DATA_LOSS...: not statuses the sidecar sends; the link or a bug failed.
        return RemoteError(ErrorCode.INTERNAL, f"sidecar at {target} failed ({status.name})")
    trailers = dict(exc.trailing_metadata() or ())
    if status is grpc.StatusCode.UNAVAILABLE and ERROR_ORIGIN_KEY not in trailers:
        # Not the sidecar's own refusal (no deployment could serve): the link itself.
        details = f"sidecar at {target} is unreachable"
    field = None
    if code is ErrorCode.INVALID_ARGUMENT:
        match = _FIELD.match(details)
        field = match.group(1) if match else None
    kind = trailers.get(ERROR_KIND_KEY)
    return RemoteError(
        code, details, field, _retry_after(trailers), kind if isinstance(kind, str) else None
    )


def _retry_after(trailers: dict[str, Any]) -> float | None:
    """The sidecar's retry-after trailer, in seconds."""
    value = trailers.get("retry-after")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
