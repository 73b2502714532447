"""The Embed RPC's messages <-> the canonical embedding types, both ways.

The server decodes requests and encodes answers; the standalone HTTP bridge does
the reverse. Vectors travel as packed float32, the precision embedding models
produce.
"""

from __future__ import annotations

from sidecar.errors import InvalidRequest
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.codec import (
    REQUEST_ID,
    REQUEST_ID_MAX,
    decode_route,
    decode_usage,
    encode_route,
    encode_usage,
)
from sidecar.types import EmbeddingRequest, EmbeddingResponse, RoutingHints


def decode_embed_request(msg: pb.EmbedRequest) -> EmbeddingRequest:
    """The canonical request; raises InvalidRequest naming a bad field. (Bytes that are
    not an EmbedRequest never get here: rpc/wire.py answers them INVALID_ARGUMENT.)"""
    if msg.request_id and not REQUEST_ID.fullmatch(msg.request_id):
        raise InvalidRequest(
            "request_id",
            f"expected 1 to {REQUEST_ID_MAX} printable ASCII characters without spaces",
        )
    inputs: list[str | tuple[int, ...]] = []
    for i, item in enumerate(msg.inputs):
        kind = item.WhichOneof("input")
        if kind == "text":
            inputs.append(item.text)
        elif kind == "tokens":
            if any(token < 0 for token in item.tokens.ids):
                raise InvalidRequest(f"inputs[{i}].tokens", "token ids are never negative")
            inputs.append(tuple(item.tokens.ids))
        else:
            raise InvalidRequest(f"inputs[{i}]", "set text or tokens")
    return EmbeddingRequest(
        model=msg.model,
        inputs=tuple(inputs),
        dimensions=msg.dimensions if msg.HasField("dimensions") else None,
        metadata=dict(msg.metadata),
        hints=RoutingHints(local_only=msg.hints.local_only, no_fallback=msg.hints.no_fallback),
        request_id=msg.request_id,
    )


def encode_embed_request(request: EmbeddingRequest) -> pb.EmbedRequest:
    return pb.EmbedRequest(
        model=request.model,
        inputs=[
            pb.EmbedInput(text=item)
            if isinstance(item, str)
            else pb.EmbedInput(tokens=pb.TokenIds(ids=item))
            for item in request.inputs
        ],
        dimensions=request.dimensions,
        metadata=request.metadata,
        hints=pb.RoutingHints(
            local_only=request.hints.local_only, no_fallback=request.hints.no_fallback
        ),
        request_id=request.request_id,
    )


def encode_embed_response(answer: EmbeddingResponse) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=vector) for vector in answer.vectors],
        usage=encode_usage(answer.usage),
        route=encode_route(answer.route),
    )


def decode_embed_response(msg: pb.EmbedResponse) -> EmbeddingResponse:
    return EmbeddingResponse(
        vectors=tuple(tuple(item.values) for item in msg.embeddings),
        usage=decode_usage(msg.usage),
        route=decode_route(msg.route),
    )
