"""The Messages and Responses stream encoders on chunk sequences the simulators do not
produce on their own: coalesced thinking (the end of one signed block and the start of
the next in one chunk), redacted thinking, unsigned reasoning from a local model, text
followed by tool calls. Each stream is read back by the official SDK's own accumulator
(anthropic) or event types (openai), so the events are checked as a client reads them."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from bridge.errors import HttpError
from bridge.messages.render import MessagesStream, stop_reason
from bridge.responses.render import ResponseShell, ResponsesStream, response_body
from sidecar.types import (
    ChatResponse,
    Chunk,
    Locality,
    RouteTaken,
    ThinkingBlock,
    ToolCall,
    Usage,
)


def _frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.decode().split("\n\n")[:-1]:
        name_line, data_line = frame.split("\n")
        out.append((name_line.removeprefix("event: "), orjson.loads(data_line[6:])))
    return out


def _messages_stream(chunks: list[Chunk]) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    encoder = MessagesStream("msg_1", "alias")
    raw = encoder.first(chunks[0]) + b"".join(encoder.chunk(c) for c in chunks[1:])
    events = _frames(raw + encoder.end())
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, payload in events:
        if name != "ping":
            snapshot = accumulate_event(
                event=payload,  # type: ignore[arg-type]
                current_snapshot=snapshot,
                json_bufs=json_bufs,
            )
    return events, snapshot


def test_coalesced_thinking_blocks_keep_each_text_and_signature() -> None:
    first, second = "Look the city up.", "Then answer."
    chunks = [
        Chunk(reasoning="Look the "),
        # The rest of the first block, its signed whole, and the start of the next one.
        Chunk(reasoning="city up.Then ", thinking=(ThinkingBlock(first, "sig-1"),)),
        Chunk(reasoning="answer.", thinking=(ThinkingBlock(second, "sig-2"),)),
        Chunk(thinking=(ThinkingBlock(redacted="opaque"),)),
        Chunk(content="Lima."),
        Chunk(finish_reason="stop", usage=Usage(30, 9, 20, 4)),
    ]
    events, message = _messages_stream(chunks)
    assert [b.type for b in message.content] == [
        "thinking",
        "thinking",
        "redacted_thinking",
        "text",
    ]
    assert (message.content[0].thinking, message.content[0].signature) == (first, "sig-1")
    assert (message.content[1].thinking, message.content[1].signature) == (second, "sig-2")
    assert message.content[2].data == "opaque"
    assert message.content[3].text == "Lima."
    assert message.stop_reason == "end_turn"
    # Anthropic's input_tokens leave out the cached and cache-written ones.
    assert message.usage.input_tokens == 6
    assert message.usage.cache_read_input_tokens == 20
    assert message.usage.cache_creation_input_tokens == 4
    starts = [p["index"] for name, p in events if name == "content_block_start"]
    stops = [p["index"] for name, p in events if name == "content_block_stop"]
    assert starts == stops == [0, 1, 2, 3]


def test_local_reasoning_then_tool_calls() -> None:
    chunks = [
        Chunk(reasoning="Thinking aloud."),
        Chunk(content="Checking."),
        Chunk(tool_calls=(ToolCall("call_a", "lookup", "", 0),)),
        Chunk(tool_calls=(ToolCall(arguments='{"city":', index=0),)),
        Chunk(
            tool_calls=(
                ToolCall(arguments=' "Lima"}', index=0),
                ToolCall("call_b", "weather", '{"days": 2}', 1),
            )
        ),
        Chunk(finish_reason="tool_calls"),
    ]
    _, message = _messages_stream(chunks)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].signature == ""
    assert message.content[2].input == {"city": "Lima"}
    assert message.content[3].id == "call_b"
    assert message.content[3].input == {"days": 2}
    assert message.stop_reason == "tool_use"


def test_stop_reasons() -> None:
    assert stop_reason("length", False) == "max_tokens"
    assert stop_reason("content_filter", False) == "refusal"
    assert stop_reason("pause_turn", False) == "pause_turn"
    assert stop_reason("stop", True) == "tool_use"
    assert stop_reason("something_new", False) == "end_turn"


def test_messages_error_event() -> None:
    encoder = MessagesStream("msg_1", "alias")
    encoder.first(Chunk(content="a"))
    name, payload = _frames(encoder.failed(HttpError(503, "no deployment can serve")))[0]
    assert name == "error"
    assert payload == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "no deployment can serve"},
    }


def test_responses_text_then_calls() -> None:
    encoder = ResponsesStream(ResponseShell("r1", 0, "alias", {}))
    raw = encoder.first(Chunk(reasoning="The user wants "))
    raw += encoder.chunk(Chunk(reasoning="a city.", content="Checking. "))
    raw += encoder.chunk(Chunk(content="Now."))
    raw += encoder.chunk(Chunk(tool_calls=(ToolCall("call_a", "lookup", '{"city":', 0),)))
    raw += encoder.chunk(Chunk(tool_calls=(ToolCall(arguments=' "Lima"}', index=0),)))
    raw += encoder.chunk(Chunk(tool_calls=(ToolCall("call_b", "weather", "", 1),)))
    raw += encoder.chunk(Chunk(finish_reason="tool_calls", usage=Usage(10, 5)))
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    events = [adapter.validate_python(payload) for _, payload in _frames(raw + encoder.end())]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    output = done.response.output
    kinds = [item.type for item in output]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    assert output[0].type == "reasoning"
    assert output[0].content is not None
    assert output[0].content[0].text == "The user wants a city."
    assert output[1].type == "message"
    assert output[1].content[0].type == "output_text"
    assert output[1].content[0].text == "Checking. Now."
    assert output[2].type == "function_call"
    assert (output[2].call_id, output[2].arguments) == ("call_a", '{"city": "Lima"}')
    assert output[3].type == "function_call"
    assert (output[3].call_id, output[3].arguments) == ("call_b", "{}")
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    finished = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert added == finished == [0, 1, 2, 3]
    thought = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(thought) == "The user wants a city."
    assert done.response.usage is not None
    assert done.response.usage.total_tokens == 15


def test_whole_response_with_reasoning() -> None:
    route = RouteTaken("d/0", "alias", "ollama", "m", Locality.LOCAL, 1, "r2")
    answer = ChatResponse(
        "Lima.", (ToolCall("call_a", "lookup", "", 0),), "tool_calls", Usage(9, 4), route, "Hm."
    )
    body = orjson.loads(response_body(ResponseShell("r2", 0, "alias", {}), answer))
    response = Response.model_validate(body)
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output_text == "Lima."
    assert response.output[2].type == "function_call"
    assert response.output[2].arguments == "{}"
    assert response.status == "completed"
