"""The gRPC door's fast chunk encoding writes exactly what protobuf writes.

`codec.chunk_bytes` writes plain text chunks itself instead of building a
ChatChunk per chunk; the wire contract is the proto, so for every chunk the bytes
must be the protobuf path's, byte for byte, and decode to the same ChatChunk.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.codec import chunk_bytes, decode_chunk, encode_chunk
from sidecar.types import Chunk, Locality, RouteTaken, ThinkingBlock, ToolCall, Usage

# Any text, from the empty string past the one-byte varint length (127) and well past
# the two-byte one (16,383), with characters of every UTF-8 width.
texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=120, max_size=20_000),
)

usages = st.builds(
    Usage,
    prompt_tokens=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
    completion_tokens=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
    cached_tokens=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
    cache_write_tokens=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
)
routes = st.builds(
    RouteTaken,
    deployment=st.text(max_size=40),
    model_group=st.text(max_size=40),
    provider=st.sampled_from(["ollama", "openai", "anthropic"]),
    upstream_model=st.text(max_size=40),
    locality=st.sampled_from(list(Locality)),
    attempts=st.integers(min_value=0, max_value=10),
    request_id=st.text(alphabet="0123456789abcdef", max_size=32),
)
calls = st.builds(
    ToolCall,
    id=st.text(max_size=20),
    name=st.text(max_size=20),
    arguments=st.text(max_size=60),
    index=st.integers(min_value=0, max_value=2**31 - 1),
)
blocks = st.builds(
    ThinkingBlock,
    thinking=st.text(max_size=60),
    signature=st.text(max_size=20),
    redacted=st.text(max_size=20),
)
# Mostly the chunks a stream is made of (text, maybe the finish reason), some with
# everything else a chunk can carry.
plain = st.builds(
    Chunk, content=texts, finish_reason=st.none() | st.sampled_from(["stop", "length", ""])
)
rich = st.builds(
    Chunk,
    content=texts,
    tool_calls=st.lists(calls, max_size=2).map(tuple),
    finish_reason=st.none() | st.text(max_size=20),
    usage=st.none() | usages,
    reasoning=st.text(max_size=60),
    thinking=st.lists(blocks, max_size=2).map(tuple),
    route=st.none() | routes,
)


@settings(max_examples=400, deadline=None)
@given(plain | rich)
def test_fast_encoding_is_the_protobuf_encoding(chunk: Chunk) -> None:
    expected = encode_chunk(chunk)
    data = chunk_bytes(chunk)
    assert data == expected.SerializeToString()
    decoded = pb.ChatChunk.FromString(data)
    assert decoded == expected
    assert decode_chunk(decoded) == decode_chunk(expected)


def test_a_plain_chunk_is_its_fields_and_nothing_else() -> None:
    assert chunk_bytes(Chunk("")) == b""
    assert chunk_bytes(Chunk("hi")) == b"\x0a\x02hi"
    assert chunk_bytes(Chunk("", finish_reason="stop")) == b"\x1a\x04stop"
    long = "é" * 100  # 200 bytes: a two-byte length
    assert chunk_bytes(Chunk(long)) == b"\x0a\xc8\x01" + long.encode()


def test_text_protobuf_cannot_write_goes_the_protobuf_way() -> None:
    chunk = Chunk("lone \ud800 surrogate")
    try:
        expected: bytes | type[BaseException] = encode_chunk(chunk).SerializeToString()
    except Exception as exc:  # whatever protobuf does with it, the fast path does too
        expected = type(exc)
    try:
        got: bytes | type[BaseException] = chunk_bytes(chunk)
    except Exception as exc:
        got = type(exc)
    assert got == expected
