"""The Gemini provider's pure parts: JSON Schema as Gemini accepts it, finish reasons,
cumulative usage, and thought signatures put back on the parts they came with."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config.model import Deployment, ProviderKind
from sidecar.providers import gemini
from sidecar.providers.gemini_schema import MAX_DEPTH, gemini_schema
from sidecar.providers.http import error_message, retry_delay
from sidecar.simulate.gemini import SCHEMA_KEYWORDS
from sidecar.types import ChatRequest, Message, ThinkingBlock, ToolCall, Usage

DEPLOYMENT = Deployment(
    id="g/0",
    model_group="g",
    provider=ProviderKind.GEMINI,
    upstream_model="gemini-2.5-flash",
    api_base="http://127.0.0.1:1",
    api_key="AIza-secret",
)


def _keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in a (translated) schema."""
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key == "properties":
            for inner in value.values():
                found |= _keywords(inner)
        elif key == "items":
            found |= _keywords(value)
        elif key == "anyOf":
            for inner in value:
                found |= _keywords(inner)
    return found


PYDANTIC_STYLE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "Point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "where": {"$ref": "#/$defs/Point", "description": "the spot"},
        "radius": {"type": "number", "exclusiveMinimum": 0},
        "label": {"type": ["string", "null"], "maxLength": 20},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "kind": {"const": "circle"},
        "level": {"enum": [1, 2, 3]},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "shape": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "both": {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
    },
    "required": ["where", "radius", "ghost"],
}


def test_schema_is_translated_into_what_gemini_accepts() -> None:
    original = copy.deepcopy(PYDANTIC_STYLE)
    out = gemini_schema(PYDANTIC_STYLE)
    assert original == PYDANTIC_STYLE  # pure: the input is untouched
    assert _keywords(out) <= SCHEMA_KEYWORDS
    props = out["properties"]
    assert props["where"] == {
        "type": "object",
        "description": "the spot",
        "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
        "required": ["x", "y"],
    }
    assert props["radius"] == {"type": "number", "minimum": 0}
    assert props["label"] == {"type": "string", "nullable": True, "maxLength": 20}
    assert props["note"] == {"type": "string", "nullable": True, "default": None}
    assert props["kind"] == {"type": "string", "enum": ["circle"]}
    assert props["level"] == {"type": "string", "enum": ["1", "2", "3"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["shape"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert props["both"]["properties"] == {"a": {"type": "string"}, "b": {"type": "integer"}}
    assert props["both"]["required"] == ["a", "b"]
    # A required name the schema does not declare would be refused.
    assert out["required"] == ["where", "radius"]


_KEYWORDS = st.sampled_from(
    [
        "type", "properties", "items", "required", "enum", "const", "anyOf", "oneOf",
        "allOf", "$ref", "$defs", "additionalProperties", "exclusiveMinimum", "nullable",
        "description", "format", "minimum", "default", "x-custom",
    ]
)  # fmt: skip
_LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
_NAMES = st.sampled_from(["string", "null", "object", "#/$defs/a"])
_VALUES = st.recursive(
    _LEAVES | _NAMES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_KEYWORDS | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYWORDS, _VALUES, max_size=6))
def test_any_schema_translates_without_error_into_gemini_keywords(schema: dict[str, Any]) -> None:
    out = gemini_schema(schema)
    assert _keywords(out) <= SCHEMA_KEYWORDS


def test_recursive_reference_is_cut_short() -> None:
    tree = {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    out = gemini_schema(tree)
    depth = 0
    node: Any = out
    while "properties" in node:
        node = node["properties"]["child"]
        depth += 1
    assert node == {"type": "object"}
    assert depth <= MAX_DEPTH
    assert gemini_schema({"$ref": "#/$defs/Missing"}) == {"type": "object"}


@pytest.mark.parametrize(
    ("reason", "tool_calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("OTHER", False, "OTHER"),
        ("LANGUAGE", False, "LANGUAGE"),
        ("A_REASON_FROM_NEXT_YEAR", True, "A_REASON_FROM_NEXT_YEAR"),
    ],
)
def test_finish_reasons_are_mapped_explicitly(reason: str, tool_calls: bool, expected: str) -> None:
    assert gemini.finish_reason(reason, tool_calls=tool_calls) == expected


def test_usage_is_read_not_summed() -> None:
    raw = {
        "promptTokenCount": 120,
        "cachedContentTokenCount": 100,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 30,
        "toolUsePromptTokenCount": 5,
        "totalTokenCount": 162,
    }
    assert gemini.usage(raw) == Usage(125, 37, cached_tokens=100)
    assert gemini.usage({"promptTokenCount": 3}) == Usage(3, 0)
    assert gemini.usage(None) is None


def test_signatures_go_back_on_the_parts_they_came_with() -> None:
    calls = (
        ToolCall("call_r_0", "lookup", '{"city":"Lima"}', 0),
        ToolCall("call_r_1", "weather", '{"days":2}', 1),
    )
    request = ChatRequest(
        "g",
        (
            Message("user", "Look Lima up."),
            Message(
                "assistant",
                "Checking.",
                tool_calls=calls,
                thinking=(ThinkingBlock("Two tools.", "c2lnMQ=="),),
            ),
            Message("tool", '{"population": 9}', tool_call_id="call_r_0"),
            Message("tool", "sunny", tool_call_id="call_r_1"),
            Message("assistant", "Lima: 9M, sunny.", thinking=(ThinkingBlock("", "c2lnMg=="),)),
            Message("user", "Thanks."),
        ),
    )
    contents = gemini.build_body(DEPLOYMENT, request)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[1]["parts"] == [
        {"text": "Checking."},
        # The batch's one signature on its first call, byte for byte.
        {
            "functionCall": {"name": "lookup", "args": {"city": "Lima"}},
            "thoughtSignature": "c2lnMQ==",
        },
        {"functionCall": {"name": "weather", "args": {"days": 2}}},
    ]
    # Both results in one user turn, matched to their calls by name; JSON stays an object.
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"population": 9}}},
        {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
    ]
    assert contents[3]["parts"] == [{"text": "Lima: 9M, sunny.", "thoughtSignature": "c2lnMg=="}]


def test_request_settings() -> None:
    request = ChatRequest(
        "g",
        (Message("user", "hi", images=("data:image/jpeg;base64,AAAA",)),),
        extra={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": PYDANTIC_STYLE},
            },
            "top_k": 4,
            "reasoning_effort": "low",
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
            "tools": [
                {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
                {"googleSearch": {}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "now"}},
            "user": "someone",  # OpenAI-only: not sent
        },
    )
    body = gemini.build_body(DEPLOYMENT, request)
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert _keywords(config["responseSchema"]) <= SCHEMA_KEYWORDS
    assert config["topK"] == 4
    assert config["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    assert body["safetySettings"][0]["threshold"] == "OFF"
    # A function without parameters declares none; Gemini's own tools pass as they are.
    assert body["tools"] == [{"functionDeclarations": [{"name": "now"}]}, {"googleSearch": {}}]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["now"]}
    }
    assert body["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}
    }
    assert "user" not in body
    # The key travels in a header, never in the URL.
    assert "key=" not in gemini.stream_path(DEPLOYMENT)
    assert gemini.stream_path(DEPLOYMENT) == (
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    # An api_base written with its version (as some configurations do) keeps it.
    versioned = dataclasses.replace(DEPLOYMENT, api_base="https://example.com/v1beta")
    assert gemini.stream_path(versioned) == (
        "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )


def test_google_error_bodies() -> None:
    body = (
        b'[{"error": {"code": 429, "message": "Quota exceeded for key AIza-secret",'
        b' "status": "RESOURCE_EXHAUSTED", "details": [{"@type":'
        b' "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}]}}]'
    )
    assert retry_delay(body) == 20.0
    assert retry_delay(body.replace(b'"20s"', b'"1.5s"')) == 1.5
    assert retry_delay(b'{"error": {"details": [{"retryDelay": "soon"}]}}') is None
    assert retry_delay(b"not json retryDelay") is None
    # The message inside the array Google wraps a streaming call's error in, key redacted.
    assert error_message(body, ("AIza-secret",)) == "Quota exceeded for key [redacted]"
