"""One table of translations: the same canonical request rendered for each provider, and
each provider's reply (raw bytes from a small upstream written here, not a simulator)
parsed back to the same canonical answer. The differences between the protocols are the
differences between the rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from sidecar.config.model import Deployment, ProviderKind
from sidecar.providers import ProviderRegistry, anthropic, gemini, ollama, openai
from sidecar.types import (
    ChatRequest,
    GenerationParams,
    Message,
    ThinkingBlock,
    ToolCall,
    Usage,
    merge_tool_calls,
)

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}]
REQUEST = ChatRequest(
    model="m",
    messages=(
        Message("system", "Be terse."),
        Message("user", "Look Lima up."),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "lookup", '{"city":"Lima"}'),)),
        Message("tool", "9M people", tool_call_id="call_1"),
    ),
    params=GenerationParams(max_tokens=64, temperature=0.2, stop=("END",)),
    extra={"tools": TOOLS, "tool_choice": "required"},
)

RENDERED: dict[ProviderKind, tuple[Callable[[Deployment, ChatRequest], Any], dict[str, Any]]] = {
    ProviderKind.OLLAMA: (
        ollama.build_body,
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Look Lima up."},
                # Arguments as an object, and no call id: Ollama has none.
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "lookup", "arguments": {"city": "Lima"}}}],
                },
                {"role": "tool", "content": "9M people", "tool_call_id": "call_1"},
            ],
            "stream": True,
            "options": {"num_predict": 64, "temperature": 0.2, "stop": ["END"]},
            "tools": TOOLS,  # tool_choice: Ollama has no such option
        },
    ),
    ProviderKind.OPENAI: (
        openai.build_body,
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Look Lima up."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"city":"Lima"}'},
                        }
                    ],
                },
                {"role": "tool", "content": "9M people", "tool_call_id": "call_1"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 64,
            "temperature": 0.2,
            "stop": ["END"],
            "tools": TOOLS,
            "tool_choice": "required",
        },
    ),
    ProviderKind.ANTHROPIC: (
        anthropic.build_body,
        {
            "model": "m",
            # The system prompt is lifted out; the tool result is a block of a user turn.
            "system": "Be terse.",
            "messages": [
                {"role": "user", "content": "Look Lima up."},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "lookup",
                            "input": {"city": "Lima"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "9M people"}
                    ],
                },
            ],
            "max_tokens": 64,
            "stream": True,
            "temperature": 0.2,
            "stop_sequences": ["END"],
            "tools": [{"name": "lookup", "input_schema": SCHEMA}],
            "tool_choice": {"type": "any"},
        },
    ),
    ProviderKind.GEMINI: (
        gemini.build_body,
        {
            # The model is in the URL; roles are user and model; the tool result is a
            # functionResponse matched by name, its text wrapped in an object.
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Look Lima up."}]},
                {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "lookup", "args": {"city": "Lima"}}}],
                },
                {
                    "role": "user",
                    "parts": [
                        {
                            "functionResponse": {
                                "name": "lookup",
                                "response": {"output": "9M people"},
                            }
                        }
                    ],
                },
            ],
            "generationConfig": {
                "maxOutputTokens": 64,
                "temperature": 0.2,
                "stopSequences": ["END"],
            },
            "tools": [{"functionDeclarations": [{"name": "lookup", "parameters": SCHEMA}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        },
    ),
}


def _deployment(kind: ProviderKind, api_base: str = "http://127.0.0.1:1") -> Deployment:
    return Deployment(
        id="t/0", model_group="t", provider=kind, upstream_model="m", api_base=api_base
    )


@pytest.mark.parametrize("kind", list(RENDERED), ids=lambda k: k.value)
def test_one_request_rendered_for_each_provider(kind: ProviderKind) -> None:
    build, expected = RENDERED[kind]
    assert build(_deployment(kind), REQUEST) == expected


# ----- replies -----------------------------------------------------------------------------

# Each reply says "Lima." in two pieces and calls lookup twice in parallel, with usage.
_OLLAMA_REPLY = b"".join(
    orjson.dumps(line) + b"\n"
    for line in (
        {"model": "m", "message": {"role": "assistant", "content": "Li"}, "done": False},
        {"model": "m", "message": {"role": "assistant", "content": "ma."}, "done": False},
        {
            "model": "m",
            "message": {
                "role": "assistant",
                "content": "",
                # Arguments as objects and no index: the calls must stay apart.
                "tool_calls": [
                    {"function": {"name": "lookup", "arguments": {"city": "Lima"}}},
                    {"function": {"name": "lookup", "arguments": {"city": "Cusco"}}},
                ],
            },
            "done": False,
        },
        {
            "model": "m",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 30,
            "eval_count": 9,
        },
    )
)


def _sse(*events: tuple[str | None, Any]) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"
    return out


def _openai_delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _openai_call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments} if name else {"arguments": arguments}
    entry: dict[str, Any] = {"index": index, "function": function}
    if call_id:
        entry.update(id=call_id, type="function")
    return _openai_delta({"tool_calls": [entry]})


_OPENAI_REPLY = _sse(
    (None, _openai_delta({"role": "assistant", "content": "Li"})),
    (None, _openai_delta({"content": "ma."})),
    (None, _openai_call(0, "call_a", "lookup", '{"city":')),
    (None, _openai_call(1, "call_b", "lookup", '{"city":"Cusco"}')),
    (None, _openai_call(0, "", "", '"Lima"}')),
    (None, _openai_delta({}, "tool_calls")),
    (None, {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9}}),
    (None, b"[DONE]"),
)


def _block(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


_ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "cache_read_input_tokens": 15,
    "cache_creation_input_tokens": 5,
}
_ANTHROPIC_REPLY = _sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "content": [],
                "usage": {**_ANTHROPIC_USAGE, "output_tokens": 1},
            },
        },
    ),
    _block(0, {"type": "thinking", "thinking": ""}),
    _delta(0, {"type": "thinking_delta", "thinking": "Two cities."}),
    _delta(0, {"type": "signature_delta", "signature": "sig=="}),
    _stop(0),
    _block(1, {"type": "redacted_thinking", "data": "opaque"}),
    _stop(1),
    ("ping", {"type": "ping"}),
    _block(2, {"type": "text", "text": ""}),
    _delta(2, {"type": "text_delta", "text": "Li"}),
    _delta(2, {"type": "text_delta", "text": "ma."}),
    _stop(2),
    # An event type this sidecar has never heard of: ignored, as the API asks.
    ("content_block_hint", {"type": "content_block_hint", "index": 2}),
    _block(3, {"type": "tool_use", "id": "call_a", "name": "lookup", "input": {}}),
    _delta(3, {"type": "input_json_delta", "partial_json": ""}),
    _delta(3, {"type": "input_json_delta", "partial_json": '{"city":'}),
    _delta(3, {"type": "input_json_delta", "partial_json": '"Lima"}'}),
    _stop(3),
    _block(4, {"type": "tool_use", "id": "call_b", "name": "lookup", "input": {}}),
    _delta(4, {"type": "input_json_delta", "partial_json": '{"city":"Cusco"}'}),
    _stop(4),
    # The usage here is cumulative and repeats the input figures: nothing is summed.
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {**_ANTHROPIC_USAGE, "output_tokens": 9},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)


def _gemini_chunk(
    parts: list[dict[str, Any]], candidates: int, finish: str | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    # Every chunk carries the usage so far, the prompt figures repeated: nothing is summed.
    usage = {
        "promptTokenCount": 30,
        "cachedContentTokenCount": 15,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": 4,
        "totalTokenCount": 34 + candidates,
    }
    return {"candidates": [candidate], "usageMetadata": usage, "responseId": "r1"}


# No event names and no sentinel, CRLF between events; the body just ends.
_GEMINI_REPLY = b"".join(
    b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
    for chunk in (
        _gemini_chunk([{"text": "Two cities.", "thought": True}], 0),
        _gemini_chunk([{"text": "Li"}], 1),
        _gemini_chunk([{"text": "ma."}], 2),
        # Parallel calls with no index; the batch's one signature is on the first.
        _gemini_chunk(
            [
                {
                    "functionCall": {"name": "lookup", "args": {"city": "Lima"}},
                    "thoughtSignature": "sig==",
                },
                {"functionCall": {"name": "lookup", "args": {"city": "Cusco"}}},
            ],
            5,
        ),
        _gemini_chunk([{"text": ""}], 5, "STOP"),
    )
)

REPLIES: dict[ProviderKind, tuple[str, str, bytes, str]] = {
    # Ollama says "stop" when it calls tools; the sidecar reports what happened.
    ProviderKind.OLLAMA: ("/api/chat", "application/x-ndjson", _OLLAMA_REPLY, "tool_calls"),
    ProviderKind.OPENAI: ("/chat/completions", "text/event-stream", _OPENAI_REPLY, "tool_calls"),
    ProviderKind.ANTHROPIC: ("/v1/messages", "text/event-stream", _ANTHROPIC_REPLY, "tool_calls"),
    # Gemini ends tool calls with STOP; the sidecar reports what happened.
    ProviderKind.GEMINI: (
        "/v1beta/models/m:streamGenerateContent",
        "text/event-stream",
        _GEMINI_REPLY,
        "tool_calls",
    ),
}
# What each reply means, in canonical terms. Ollama gives no call ids (the sidecar numbers
# them, as it does Gemini's, whose answers have an id); Anthropic and Gemini report
# cached tokens and signed thinking.
CALL_IDS = {
    ProviderKind.OLLAMA: ["call_0", "call_1"],
    ProviderKind.OPENAI: ["call_a", "call_b"],
    ProviderKind.ANTHROPIC: ["call_a", "call_b"],
    ProviderKind.GEMINI: ["call_r1_0", "call_r1_1"],
}
USAGE = {
    ProviderKind.OLLAMA: Usage(30, 9),
    ProviderKind.OPENAI: Usage(30, 9),
    ProviderKind.ANTHROPIC: Usage(30, 9, cached_tokens=15, cache_write_tokens=5),
    # Output is candidates (5) plus thoughts (4), read from the last chunk alone.
    ProviderKind.GEMINI: Usage(30, 9, cached_tokens=15),
}
THINKING = {
    ProviderKind.ANTHROPIC: (
        ThinkingBlock("Two cities.", "sig=="),
        ThinkingBlock(redacted="opaque"),
    ),
    ProviderKind.GEMINI: (ThinkingBlock("Two cities.", "sig=="),),
}


@asynccontextmanager
async def _upstream(path: str, content_type: str, body: bytes) -> AsyncIterator[str]:
    """A one-route server sending `body` in one write, as a real upstream may buffer it."""

    async def reply(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post(path, reply)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", list(REPLIES), ids=lambda k: k.value)
async def test_each_reply_parsed_to_the_same_answer(kind: ProviderKind) -> None:
    path, content_type, body, finish = REPLIES[kind]
    registry = ProviderRegistry()
    try:
        async with _upstream(path, content_type, body) as url:
            chunks = [c async for c in registry.stream(_deployment(kind, url), REQUEST)]
    finally:
        await registry.aclose()
    assert "".join(c.content for c in chunks) == "Lima."
    calls = merge_tool_calls(f for c in chunks for f in c.tool_calls)
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("lookup", {"city": "Lima"}),
        ("lookup", {"city": "Cusco"}),
    ]
    assert [c.index for c in calls] == [0, 1]
    assert [c.id for c in calls] == CALL_IDS[kind]
    final = chunks[-1]
    assert final.finish_reason == finish
    assert final.usage == USAGE[kind]
    assert tuple(b for c in chunks for b in c.thinking) == THINKING.get(kind, ())
    assert "".join(c.reasoning for c in chunks) == ("Two cities." if kind in THINKING else "")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, None),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "lookup"}}},
            {"type": "tool", "name": "lookup"},
        ),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
    ],
)
def test_anthropic_tool_choice(extra: dict[str, Any], expected: dict[str, Any] | None) -> None:
    request = ChatRequest("m", (Message("user", "hi"),), extra={"tools": TOOLS, **extra})
    body = anthropic.build_body(_deployment(ProviderKind.ANTHROPIC), request)
    assert body.get("tool_choice") == expected


def test_anthropic_images_and_default_max_tokens() -> None:
    request = ChatRequest(
        "m",
        (
            Message("user", "What is this?", images=("data:image/jpeg;base64,AAAA", "QkJC")),
            Message("user", "And this?", images=("https://example.com/cat.png",)),
        ),
    )
    body = anthropic.build_body(_deployment(ProviderKind.ANTHROPIC), request)
    assert body["max_tokens"] == anthropic.DEFAULT_MAX_TOKENS
    # Two user turns in a row become one, as the API wants turns to alternate.
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"},
                },
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "QkJC"},
                },
                {"type": "text", "text": "And this?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            ],
        }
    ]


async def test_gemini_text_signature_and_blocked_prompt() -> None:
    """A signature on an answer's closing empty text part (Gemini 3 signs text answers so)
    comes back as a thinking block; a blocked prompt ends as content filtering."""
    signed = _sse(
        (None, _gemini_chunk([{"text": "Lima."}], 2)),
        (None, _gemini_chunk([{"text": "", "thoughtSignature": "dGV4dA=="}], 2, "STOP")),
    )
    blocked = _sse(
        (None, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "responseId": "r1"})
    )
    path = "/v1beta/models/m:streamGenerateContent"
    registry = ProviderRegistry()
    try:
        async with _upstream(path, "text/event-stream", signed) as url:
            chunks = [
                c async for c in registry.stream(_deployment(ProviderKind.GEMINI, url), REQUEST)
            ]
        async with _upstream(path, "text/event-stream", blocked) as url:
            refused = [
                c async for c in registry.stream(_deployment(ProviderKind.GEMINI, url), REQUEST)
            ]
    finally:
        await registry.aclose()
    assert "".join(c.content for c in chunks) == "Lima."
    assert [b for c in chunks for b in c.thinking] == [ThinkingBlock("", "dGV4dA==")]
    assert chunks[-1].finish_reason == "stop"
    assert [(c.content, c.finish_reason) for c in refused] == [("", "content_filter")]
