"""`POST /v1/embeddings` in OpenAI's shape -> the canonical EmbeddingRequest, and back.

The input is a string, an array of strings, an array of token ids or an array of
token-id arrays (OpenAI's four shapes; a batch passes upstream as one call).
`dimensions` asks for shorter vectors; `encoding_format` "base64" answers each vector
as little-endian float32 bytes in base64, as OpenAI does (the `openai` SDK asks for
it by default and decodes it). `metadata` and `timeout` mean what they mean for chat.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any, Final

import orjson

from bridge.errors import bad_request
from bridge.parse import call_timeout, routing_metadata, wrong_field
from sidecar.types import EmbeddingRequest, EmbeddingResponse

_MAX_ID: Final = 2**31 - 1  # the gRPC contract's int32
_FORMATS: Final = frozenset({"float", "base64"})
_INPUT: Final = "a string, an array of strings, an array of token ids or an array of token arrays"


@dataclass(frozen=True, slots=True)
class ParsedEmbedding:
    request: EmbeddingRequest
    base64: bool
    timeout: float | None = None


def parse_embedding(body: dict[str, Any], request_id: str) -> ParsedEmbedding:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise wrong_field("model", model, "a non-empty string")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise wrong_field("dimensions", dimensions, "a positive integer")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in _FORMATS:
        raise wrong_field("encoding_format", encoding, '"float" or "base64"')
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise wrong_field("user", user, "a string")
    hints, metadata = routing_metadata(body.get("metadata"))
    if user and "caller" not in metadata:
        metadata["caller"] = user
    request = EmbeddingRequest(
        model=model,
        inputs=_inputs(body.get("input")),
        dimensions=dimensions,
        metadata=metadata,
        hints=hints,
        request_id=request_id,
    )
    return ParsedEmbedding(request, encoding == "base64", call_timeout(body.get("timeout")))


def _inputs(value: Any) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(value, str):
        if not value:
            raise bad_request("input", "input: must not be an empty string")
        return (value,)
    if not isinstance(value, list) or not value:
        raise wrong_field("input", value or None, _INPUT)
    first = value[0]
    if isinstance(first, int) and not isinstance(first, bool):
        return (_tokens("input", value),)
    if isinstance(first, list):
        return tuple(_tokens(f"input[{i}]", item) for i, item in enumerate(value))
    texts = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise wrong_field(f"input[{i}]", item, "a string, as the first input is")
        if not item:
            raise bad_request(f"input[{i}]", f"input[{i}]: must not be an empty string")
        texts.append(item)
    return tuple(texts)


def _tokens(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise wrong_field(where, value or None, "a non-empty array of token ids")
    for token in value:
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token <= _MAX_ID:
            raise wrong_field(where, value, f"an array of token ids (integers 0 to {_MAX_ID})")
    return tuple(value)


def embedding_body(model: str, answer: EmbeddingResponse, *, as_base64: bool) -> bytes:
    """OpenAI's `list` of `embedding` objects, with usage."""
    data = []
    for index, vector in enumerate(answer.vectors):
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
            if as_base64
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt = answer.usage.prompt_tokens or 0
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )
