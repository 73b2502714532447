"""The bridge's pure parts, without sockets: request parsing, SSE rendering, error mapping."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from bridge.errors import HttpError, http_error
from bridge.parse import parse_body, parse_chat
from bridge.remote import remote_error
from bridge.render import StreamWriter
from sidecar.errors import (
    ContextWindowExceeded,
    ErrorCode,
    InvalidRequest,
    NoDeploymentAvailable,
    PrivacyBlocked,
    ProviderUnsupported,
    UnknownModel,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sidecar.rpc.codec import ERROR_ORIGIN_KEY
from sidecar.types import Chunk, RoutingHints, ToolCall, Usage


def parse(**fields: Any) -> Any:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat(body, "rid")


# -- parsing ----------------------------------------------------------------------------------


def test_content_parts_become_text_and_images() -> None:
    parsed = parse(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    {"type": "text", "text": "What is it?"},
                    {"type": "image_url", "image_url": "https://example.com/cat.png"},
                ],
            },
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        ]
    )
    developer, user, assistant = parsed.request.messages
    assert (developer.role, developer.content) == ("developer", "Be brief.")
    assert user.content == "Look:\nWhat is it?"
    assert user.images == ("data:image/png;base64,AA", "https://example.com/cat.png")
    assert assistant.content == "No."
    assert parsed.request.request_id == "rid"


def test_assistant_tool_calls_and_tool_results() -> None:
    parsed = parse(
        messages=[
            {"role": "user", "content": "Weather in Lima?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "t", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny", "name": "w"},
        ]
    )
    _, assistant, tool = parsed.request.messages
    assert assistant.content == ""
    assert assistant.tool_calls == (ToolCall("c1", "w", "{}", 0), ToolCall("c2", "t", "", 1))
    assert (tool.tool_call_id, tool.name, tool.content) == ("c1", "w", "sunny")


def test_generation_params_and_precedence() -> None:
    params = parse(
        max_tokens=100, max_completion_tokens=10, temperature=0, top_p=1, stop="END", seed=3
    ).request.params
    assert (params.max_tokens, params.temperature, params.top_p) == (10, 0, 1)
    assert (params.stop, params.seed) == (("END",), 3)
    assert parse(max_tokens=100).request.params.max_tokens == 100
    assert parse(stop=["a", "b"]).request.params.stop == ("a", "b")


def test_passthrough_fields_go_to_extra() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    extra = parse(
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_object"},
        parallel_tool_calls=False,
        user="u",
        keep_alive="10m",
        logprobs=None,
    ).request.extra
    assert extra == {
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_object"},
        "parallel_tool_calls": False,
        "user": "u",
        "keep_alive": "10m",
    }
    assert parse().request.extra == {}


def test_metadata_gives_hints_and_string_tags() -> None:
    request = parse(
        metadata={
            "no_fallback": True,
            "local_only": "TRUE",
            "task": "code",
            "priority": 3,
            "flag": False,
            "nested": {"a": 1},
        }
    ).request
    assert request.hints == RoutingHints(local_only=True, no_fallback=True)
    assert request.metadata == {
        "task": "code",
        "priority": "3",
        "flag": "false",
        "nested": '{"a":1}',
    }
    assert parse(metadata={"no_fallback": "false"}).request.hints == RoutingHints()


def test_stream_flags() -> None:
    assert not parse().stream
    streamed = parse(stream=True, stream_options={"include_usage": True})
    assert (streamed.stream, streamed.include_usage) == (True, True)
    assert not parse(stream=True, stream_options={}).include_usage
    assert parse(n=1, stream=None).stream is False


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"\xff{}", "UTF-8 (byte 0"),
        (b"{,}", "not valid JSON"),
        (b"null", "not null"),
        (b"12", "not the number 12"),
    ],
)
def test_bodies_that_are_not_objects(raw: bytes, words: str) -> None:
    with pytest.raises(HttpError) as err:
        parse_body(raw)
    assert err.value.status == 400
    assert words in err.value.message


# -- rendering --------------------------------------------------------------------------------


def events(raw: bytes) -> list[Any]:
    return [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e and e != b"data: [DONE]"]


def test_stream_writer_escapes_content_and_merges_coalesced_tool_fragments() -> None:
    writer = StreamWriter("chatcmpl-1", 7, 'a"lias', include_usage=False)
    text = 'quote " newline \n unicode é \u2028 nul \x00'
    first = events(writer.first(Chunk(content=text)))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first[1]["choices"][0]["delta"] == {"content": text}
    assert first[1]["model"] == 'a"lias'
    fragments = (
        ToolCall(id="call_1", name="f", arguments="", index=0),
        ToolCall(arguments='{"a":', index=0),
        ToolCall(arguments="1}", index=0),
        ToolCall(id="call_2", name="g", arguments="{}", index=1),
    )
    frames = events(writer.chunk(Chunk(tool_calls=fragments, finish_reason="tool_calls")))
    assert frames[0]["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "f", "arguments": '{"a":1}'},
        },
        {
            "index": 1,
            "id": "call_2",
            "type": "function",
            "function": {"name": "g", "arguments": "{}"},
        },
    ]
    later = events(writer.chunk(Chunk(tool_calls=(ToolCall(arguments="x", index=1),))))
    assert later[0]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 1, "function": {"arguments": "x"}}
    ]
    assert frames[1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert writer.end() == b"data: [DONE]\n\n"


def test_usage_chunk_reports_unknown_counts_as_zero() -> None:
    writer = StreamWriter("chatcmpl-1", 7, "m", include_usage=True)
    writer.chunk(Chunk(finish_reason="stop", usage=Usage(prompt_tokens=None, completion_tokens=4)))
    usage = events(writer.end())[0]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 0, "completion_tokens": 4, "total_tokens": 4}


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "param", "code"),
    [
        (InvalidRequest("temperature", "too hot"), 400, "temperature", None),
        (ContextWindowExceeded(9000, 8192), 400, "messages", "context_length_exceeded"),
        (UnknownModel("x", ["a"]), 404, "model", "model_not_found"),
        (PrivacyBlocked("held back for privacy"), 400, None, "failed_precondition"),
        (UpstreamUnavailable("d/0", "refused"), 503, None, "service_unavailable"),
        (UpstreamTimeout("d/0", "slow"), 504, None, "timeout"),
        (UpstreamMalformed("d/0", "garbage"), 502, None, "bad_gateway"),
        (ProviderUnsupported("d/0", "no provider"), 501, None, "not_implemented"),
    ],
)
def test_sidecar_errors_map_to_openai_statuses(
    error: Any, status: int, param: str | None, code: str | None
) -> None:
    mapped = http_error(error)
    assert (mapped.status, mapped.param, mapped.code) == (status, param, code)
    assert mapped.message == error.message


def test_retry_after_is_the_soonest_a_deployment_named() -> None:
    failures = [
        UpstreamUnavailable("a/0", "429", retry_after=7.2),
        UpstreamUnavailable("a/1", "503", retry_after=1.5),
        UpstreamUnavailable("a/2", "reset"),
    ]
    mapped = http_error(NoDeploymentAvailable("a", failures))
    assert mapped.status == 503
    assert (b"retry-after", b"2") in mapped.headers
    assert not http_error(UpstreamUnavailable("a/0", "reset")).headers


@pytest.mark.parametrize(
    ("status", "details", "http", "param"),
    [
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "messages[0].role: 'x' is not one of",
            400,
            "messages[0].role",
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "something odd", 400, None),
        (grpc.StatusCode.NOT_FOUND, "unknown model 'x'", 404, "model"),
        (grpc.StatusCode.FAILED_PRECONDITION, "held back for privacy", 400, None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget exhausted", 429, None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max", 413, None),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", 503, None),
        (grpc.StatusCode.UNAVAILABLE, "deployment 'a/0': busy", 503, None),
        # An upstream's refused connection, in the sidecar's words: not the sidecar's link.
        (grpc.StatusCode.UNAVAILABLE, "deployment 'a/0': connection refused", 503, None),
        (grpc.StatusCode.CANCELLED, "shutting down", 503, None),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "no first token", 504, None),
        (grpc.StatusCode.INTERNAL, "malformed", 502, None),
        (grpc.StatusCode.UNKNOWN, "Unexpected <class 'KeyError'>", 502, None),
        (grpc.StatusCode.UNIMPLEMENTED, "no provider", 501, None),
    ],
)
def test_grpc_statuses_map_back(
    status: grpc.StatusCode, details: str, http: int, param: str | None
) -> None:
    # The sidecar marks the errors it ends a call with; gRPC's library's own carry no mark.
    library = ("larger than max", "failed to connect", "Unexpected <class")
    said_by_library = any(words in details for words in library)
    marked = () if said_by_library else ((ERROR_ORIGIN_KEY, "sidecar"),)
    failure = grpc.aio.AioRpcError(
        status, grpc.aio.Metadata(), grpc.aio.Metadata(*marked), details=details
    )
    error = remote_error(failure, "host:1")
    mapped = error if isinstance(error, HttpError) else http_error(error)
    assert (mapped.status, mapped.param) == (http, param)
    # The sidecar's words are passed on; what gRPC's library says itself is not.
    if said_by_library:
        assert details not in mapped.message
        assert "sidecar" in mapped.message
    else:
        assert details in mapped.message


def test_every_error_code_has_a_status() -> None:
    for code in ErrorCode:
        error = InvalidRequest("f", "x")
        error.code = code
        assert http_error(error).status != 500
