"""Translation between the gRPC messages and the canonical types, both ways.

The server decodes requests and encodes answers; a gRPC client of the sidecar
(the standalone HTTP bridge) does the reverse with the same functions.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from sidecar.engine import RoutePlan
from sidecar.errors import InvalidRequest
from sidecar.nesting import MAX_DEPTH, too_deep
from sidecar.rpc.api import router_pb2 as pb
from sidecar.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    DeploymentStatus,
    GenerationParams,
    HealthStatus,
    Locality,
    Message,
    ModelStatus,
    RouteTaken,
    RoutingHints,
    ThinkingBlock,
    ToolCall,
    Usage,
)

# The largest message either side accepts: a 100K-token chat with images runs past
# gRPC's default 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A request id is sent back as x-request-id metadata, so it must be a valid header value;
# the HTTP bridge applies the same rule to its x-request-id header.
REQUEST_ID_MAX = 128
REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{REQUEST_ID_MAX}}}")

# Trailing metadata naming a failure's `kind` (e.g. context_length_exceeded), when it has one.
ERROR_KIND_KEY = "x-sidecar-error-kind"
# On every error the sidecar itself ends a call with, so that a client can tell its words
# (an upstream that refused a connection, say) from what gRPC's library says of the link.
ERROR_ORIGIN_KEY = "x-sidecar-error-origin"
# The one mapping of locality to the wire and back, for every user of the gRPC contract.
LOCALITY_TO_PB = {Locality.LOCAL: pb.LOCALITY_LOCAL, Locality.CLOUD: pb.LOCALITY_CLOUD}
LOCALITY_FROM_PB = {v: k for k, v in LOCALITY_TO_PB.items()}


# -- requests ---------------------------------------------------------------


class Undecodable:
    """Stands for request bytes that are not the message they should be (see wire.py)."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


def decode_request(msg: pb.ChatRequest | Undecodable, *, assign_id: bool = False) -> ChatRequest:
    """Build the canonical request; raises InvalidRequest naming a bad field.

    Everything that later goes out as metadata or upstream is checked here, before
    anything is sent: an id that could not be a header, JSON nested too deep to
    serialise again. With `assign_id`, a request that has no id gets a fresh one.

    Per call, on the hot path: what the request leaves out (parameters, hints, tool
    calls, images, thinking) is not decoded but shared, which halves the cost of a
    plain chat.
    """
    if isinstance(msg, Undecodable):
        raise InvalidRequest(
            "request",
            f"not a valid {msg.message_type} message (corrupt protobuf, or a string "
            "field that is not UTF-8)",
        )
    extra: dict[str, Any] = {}
    if msg.extra_json:
        try:
            extra = orjson.loads(msg.extra_json)
        except orjson.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise InvalidRequest("extra_json", f"not valid JSON (at {where})") from None
        if not isinstance(extra, dict):
            raise InvalidRequest("extra_json", "must be a JSON object")
        if too_deep(extra):
            raise InvalidRequest("extra_json", f"nested more than {MAX_DEPTH} levels deep")
    if msg.request_id and not REQUEST_ID.fullmatch(msg.request_id):
        raise InvalidRequest(
            "request_id",
            f"expected 1 to {REQUEST_ID_MAX} printable ASCII characters without spaces",
        )
    request_id = msg.request_id
    if not request_id and assign_id:
        # Every call gets an id so its logs and route can be told apart.
        request_id = uuid.uuid4().hex
    return ChatRequest(
        msg.model,
        tuple(map(_decode_message, msg.messages)),
        _decode_params(msg.params) if msg.HasField("params") else _NO_PARAMS,
        extra,
        dict(msg.metadata) if msg.metadata else {},
        _decode_hints(msg.hints) if msg.HasField("hints") else _NO_HINTS,
        request_id,
        completion=msg.completion,
    )


_NO_PARAMS = GenerationParams()
_NO_HINTS = RoutingHints()


def _decode_message(m: pb.Message) -> Message:
    return Message(
        m.role,
        m.content,
        m.name,
        m.tool_call_id,
        _decode_calls(m.tool_calls) if m.tool_calls else (),
        tuple(m.images) if m.images else (),
        _decode_thinking(m.thinking) if m.thinking else (),
    )


def _decode_params(params: pb.GenerationParams) -> GenerationParams:
    return GenerationParams(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        stop=tuple(params.stop),
        seed=params.seed if params.HasField("seed") else None,
    )


def _decode_hints(hints: pb.RoutingHints) -> RoutingHints:
    return RoutingHints(local_only=hints.local_only, no_fallback=hints.no_fallback)


def encode_request(request: ChatRequest) -> pb.ChatRequest:
    p = request.params
    params = pb.GenerationParams(stop=list(p.stop))
    if p.max_tokens is not None:
        params.max_tokens = p.max_tokens
    if p.temperature is not None:
        params.temperature = p.temperature
    if p.top_p is not None:
        params.top_p = p.top_p
    if p.seed is not None:
        params.seed = p.seed
    return pb.ChatRequest(
        model=request.model,
        messages=[
            pb.Message(
                role=m.role,
                content=m.content,
                name=m.name,
                tool_call_id=m.tool_call_id,
                tool_calls=_encode_calls(m.tool_calls),
                images=list(m.images),
                thinking=_encode_thinking(m.thinking),
            )
            for m in request.messages
        ],
        params=params,
        extra_json=orjson.dumps(request.extra).decode() if request.extra else "",
        metadata=dict(request.metadata),
        hints=pb.RoutingHints(
            local_only=request.hints.local_only, no_fallback=request.hints.no_fallback
        ),
        request_id=request.request_id,
        completion=request.completion,
    )


# -- answers ----------------------------------------------------------------


def encode_chunk(chunk: Chunk) -> pb.ChatChunk:
    msg = pb.ChatChunk(delta=chunk.content)
    if chunk.tool_calls:
        msg.tool_calls.extend(_encode_calls(chunk.tool_calls))
    if chunk.finish_reason:
        msg.finish_reason = chunk.finish_reason
    if chunk.reasoning:
        msg.reasoning = chunk.reasoning
    if chunk.thinking:
        msg.thinking.extend(_encode_thinking(chunk.thinking))
    if chunk.usage is not None:
        msg.usage.CopyFrom(encode_usage(chunk.usage))
    if chunk.route is not None:
        msg.route.CopyFrom(encode_route(chunk.route))
    return msg


# ChatChunk's field keys (field number << 3 | wire type 2, length-delimited) for the
# fields the fast path writes itself: delta = 1, finish_reason = 3.
_DELTA_KEY = b"\x0a"
_FINISH_KEY = b"\x1a"


def chunk_bytes(chunk: Chunk) -> bytes:
    """`encode_chunk(chunk).SerializeToString()`, byte for byte, without building the
    message for the chunks a stream is made of: text, and the finish reason.

    A relayed stream is mostly such chunks; the ones that also carry the route (the
    first), usage (the last), tool calls or reasoning go through the protobuf path.
    Protobuf writes fields in field-number order and leaves empty strings out, so a
    chunk of text alone is its key, the varint length and the UTF-8 bytes.
    """
    if (
        chunk.route is not None
        or chunk.usage is not None
        or chunk.tool_calls
        or chunk.reasoning
        or chunk.thinking
    ):
        return encode_chunk(chunk).SerializeToString()
    try:
        out = _text_field(_DELTA_KEY, chunk.content) if chunk.content else b""
        if chunk.finish_reason:
            out += _text_field(_FINISH_KEY, chunk.finish_reason)
    except UnicodeEncodeError:
        # Not valid UTF-8 (a lone surrogate): whatever protobuf makes of it, as before.
        return encode_chunk(chunk).SerializeToString()
    return out


def _text_field(key: bytes, text: str) -> bytes:
    data = text.encode()
    size = len(data)
    if size < 0x80:
        return key + bytes((size,)) + data
    length = bytearray()
    while size >= 0x80:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return key + length + data


def decode_chunk(msg: pb.ChatChunk) -> Chunk:
    return Chunk(
        content=msg.delta,
        tool_calls=_decode_calls(msg.tool_calls),
        finish_reason=msg.finish_reason or None,
        usage=decode_usage(msg.usage) if msg.HasField("usage") else None,
        route=decode_route(msg.route) if msg.HasField("route") else None,
        reasoning=msg.reasoning,
        thinking=_decode_thinking(msg.thinking),
    )


def encode_response(response: ChatResponse) -> pb.ChatResponse:
    return pb.ChatResponse(
        content=response.content,
        tool_calls=_encode_calls(response.tool_calls),
        finish_reason=response.finish_reason,
        usage=encode_usage(response.usage),
        route=encode_route(response.route),
        reasoning=response.reasoning,
        thinking=_encode_thinking(response.thinking),
    )


def decode_response(msg: pb.ChatResponse) -> ChatResponse:
    return ChatResponse(
        content=msg.content,
        tool_calls=_decode_calls(msg.tool_calls),
        finish_reason=msg.finish_reason,
        usage=decode_usage(msg.usage),
        route=decode_route(msg.route),
        reasoning=msg.reasoning,
        thinking=_decode_thinking(msg.thinking),
    )


def encode_usage(usage: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        prompt_tokens_known=usage.prompt_tokens is not None,
        completion_tokens_known=usage.completion_tokens is not None,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def decode_usage(msg: pb.Usage) -> Usage:
    return Usage(
        prompt_tokens=msg.prompt_tokens if msg.prompt_tokens_known else None,
        completion_tokens=msg.completion_tokens if msg.completion_tokens_known else None,
        cached_tokens=msg.cached_tokens if msg.HasField("cached_tokens") else None,
        cache_write_tokens=msg.cache_write_tokens if msg.HasField("cache_write_tokens") else None,
    )


def encode_route(route: RouteTaken) -> pb.RouteTaken:
    return pb.RouteTaken(
        deployment=route.deployment,
        model_group=route.model_group,
        provider=route.provider,
        upstream_model=route.upstream_model,
        locality=LOCALITY_TO_PB[route.locality],
        attempts=route.attempts,
        request_id=route.request_id,
        translated=route.translated,
    )


def decode_route(msg: pb.RouteTaken) -> RouteTaken:
    return RouteTaken(
        deployment=msg.deployment,
        model_group=msg.model_group,
        provider=msg.provider,
        upstream_model=msg.upstream_model,
        locality=LOCALITY_FROM_PB.get(msg.locality, Locality.CLOUD),
        attempts=msg.attempts,
        request_id=msg.request_id,
        translated=msg.translated,
    )


def route_metadata(route: RouteTaken) -> tuple[tuple[str, str], ...]:
    """The route as gRPC metadata, the same names the HTTP bridge uses as headers."""
    return (
        ("x-sidecar-deployment", route.deployment),
        ("x-sidecar-locality", route.locality.value),
        ("x-sidecar-attempts", str(route.attempts)),
        ("x-request-id", route.request_id),
    )


# -- plans and models --------------------------------------------------------


def encode_plan(route_plan: RoutePlan) -> pb.RoutePlan:
    return pb.RoutePlan(
        candidates=[
            pb.RouteCandidate(
                deployment=c.deployment.id,
                model_group=c.deployment.model_group,
                provider=c.deployment.provider.value,
                upstream_model=c.deployment.upstream_model,
                locality=LOCALITY_TO_PB[c.deployment.locality],
                reason=c.reason,
            )
            for c in route_plan.candidates
        ],
        notes=list(route_plan.notes),
        estimated_prompt_tokens=route_plan.estimated_prompt_tokens,
        sensitive=route_plan.sensitive,
    )


def encode_models(models: Iterable[ModelStatus]) -> pb.ListModelsResponse:
    listed = [
        pb.ModelInfo(
            name=model.name,
            description=model.description,
            deployments=[
                pb.ModelDeployment(
                    deployment=d.id,
                    provider=d.provider,
                    upstream_model=d.upstream_model,
                    locality=LOCALITY_TO_PB[d.locality],
                    api_base=d.api_base,
                    context_window=d.context_window or 0,
                    simulated=d.simulated,
                    health=None if d.health is None else _encode_health(d.health),
                )
                for d in model.deployments
            ],
            routes_to=[target.name for target in model.via],
        )
        for model in models
    ]
    simulated = any(d.simulated for m in listed for d in m.deployments)
    return pb.ListModelsResponse(models=listed, simulated=simulated)


def decode_models(message: pb.ListModelsResponse) -> tuple[ModelStatus, ...]:
    models = _decode_models(message)
    # A routing alias (auto) refers to the aliases it routes to, decoded first.
    by_name = {model.name: model for model in models}
    return tuple(
        dataclasses.replace(model, via=tuple(by_name[n] for n in info.routes_to if n in by_name))
        if info.routes_to
        else model
        for info, model in zip(message.models, models, strict=True)
    )


def _decode_models(message: pb.ListModelsResponse) -> tuple[ModelStatus, ...]:
    return tuple(
        ModelStatus(
            name=model.name,
            description=model.description,
            deployments=tuple(
                DeploymentStatus(
                    id=d.deployment,
                    provider=d.provider,
                    upstream_model=d.upstream_model,
                    locality=LOCALITY_FROM_PB.get(d.locality, Locality.CLOUD),
                    api_base=d.api_base,
                    context_window=d.context_window or None,
                    simulated=d.simulated,
                    health=_decode_health(d.health) if d.HasField("health") else None,
                )
                for d in model.deployments
            ),
        )
        for model in message.models
    )


def _encode_health(health: HealthStatus) -> pb.DeploymentHealth:
    return pb.DeploymentHealth(
        state=health.state,
        reason=health.reason,
        in_flight=health.in_flight,
        ttft_ms=health.ttft_ms or 0.0,
        cooldown_seconds=health.cooldown_seconds,
        last_error=health.last_error,
        probes_not_offered=health.probes_not_offered,
    )


def _decode_health(message: pb.DeploymentHealth) -> HealthStatus:
    return HealthStatus(
        state=message.state,
        reason=message.reason,
        in_flight=message.in_flight,
        ttft_ms=message.ttft_ms or None,
        cooldown_seconds=message.cooldown_seconds,
        last_error=message.last_error,
        probes_not_offered=tuple(message.probes_not_offered),
    )


def _decode_calls(calls: Iterable[pb.ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(c.id, c.name, c.arguments, c.index) for c in calls)


def _encode_calls(calls: Iterable[ToolCall]) -> list[pb.ToolCall]:
    return [pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments, index=c.index) for c in calls]


def _decode_thinking(blocks: Iterable[pb.ThinkingBlock]) -> tuple[ThinkingBlock, ...]:
    return tuple(ThinkingBlock(b.thinking, b.signature, b.redacted) for b in blocks)


def _encode_thinking(blocks: Iterable[ThinkingBlock]) -> list[pb.ThinkingBlock]:
    return [
        pb.ThinkingBlock(thinking=b.thinking, signature=b.signature, redacted=b.redacted)
        for b in blocks
    ]
