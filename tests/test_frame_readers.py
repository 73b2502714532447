"""The SSE and NDJSON frame readers, fed bytes directly: every rule, every split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.providers.ndjson import NdjsonReader
from sidecar.providers.sse import Event, SseReader

LIMIT = 1024


def sse_events(*pieces: bytes, limit: int = LIMIT) -> list[Event]:
    reader = SseReader(limit)
    return [event for piece in pieces for event in reader.feed(piece)]


def ndjson_lines(*pieces: bytes, limit: int = LIMIT) -> list[bytes]:
    reader = NdjsonReader(limit)
    return [line for piece in pieces for line in reader.feed(piece)]


# -- SSE ------------------------------------------------------------------------------


def test_sse_data_events_named_events_and_comments() -> None:
    stream = (
        b": a comment\n\n"
        b"data: one\n\n"
        b'event: content_block_delta\ndata: {"x":1}\n\n'
        b"id: 7\nretry: 10\ndata: after id\n\n"
    )
    assert sse_events(stream) == [
        ("message", b"one"),
        ("content_block_delta", b'{"x":1}'),
        ("message", b"after id"),
    ]


def test_sse_event_name_applies_to_one_event_only() -> None:
    stream = b"event: ping\ndata: a\n\ndata: b\n\n"
    assert sse_events(stream) == [("ping", b"a"), ("message", b"b")]


def test_sse_multi_line_data_is_joined_with_lf() -> None:
    assert sse_events(b"data: a\ndata:b\ndata:  c\n\n") == [("message", b"a\nb\n c")]


def test_sse_only_one_space_after_the_colon_is_dropped() -> None:
    assert sse_events(b"data:x\n\ndata:  y\n\n") == [("message", b"x"), ("message", b" y")]


def test_sse_a_field_without_colon_has_an_empty_value() -> None:
    assert sse_events(b"data\ndata: z\n\n") == [("message", b"\nz")]


def test_sse_blank_lines_without_data_dispatch_nothing_and_reset_the_name() -> None:
    assert sse_events(b"\n\nevent: ping\n\ndata: x\n\n") == [("message", b"x")]


def test_sse_crlf_lone_cr_and_cr_split_from_its_lf() -> None:
    assert sse_events(b"data: a\r\n\r\ndata: b\r\rdata: c\r", b"\n\r\n") == [
        ("message", b"a"),
        ("message", b"b"),
        ("message", b"c"),
    ]


def test_sse_leading_byte_order_mark_is_ignored() -> None:
    assert sse_events(b"\xef\xbb\xbfdata: x\n\n") == [("message", b"x")]


def test_sse_unfinished_event_is_not_dispatched_and_is_the_rest() -> None:
    reader = SseReader(LIMIT)
    assert reader.feed(b"data: one\n\ndata: tw") == [("message", b"one")]
    assert reader.rest == b"data: tw"
    reader.feed(b"o\n")
    assert reader.rest == b"two\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_sse_any_split_gives_the_same_events(cuts: list[int]) -> None:
    stream = (
        b": hi\r\n\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\n"
        b'data: {"k": "v"}\n\nid: 3\rdata: three\r\rdata: [DONE]\n\n'
    )
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert sse_events(*pieces) == sse_events(stream)
    assert sse_events(stream) == [
        ("a", b"1\n2"),
        ("message", b'{"k": "v"}'),
        ("message", b"three"),
        ("message", b"[DONE]"),
    ]


def test_sse_an_unfinished_line_past_the_limit_overflows() -> None:
    reader = SseReader(LIMIT)
    assert reader.feed(b"data: ok\n\ndata: " + b"x" * 600) == [("message", b"ok")]
    assert not reader.overflow
    reader.feed(b"x" * 600)
    assert reader.overflow


def test_sse_data_lines_never_dispatched_overflow_when_they_add_up() -> None:
    reader = SseReader(LIMIT)
    for _ in range(20):
        reader.feed(b"data: " + b"y" * 100 + b"\n")
    assert reader.overflow


def test_sse_a_whole_event_past_the_limit_keeps_the_events_before_it() -> None:
    reader = SseReader(LIMIT)
    big = b"data: " + b"z" * (LIMIT + 1) + b"\n\n"
    events = reader.feed(b"data: before\n\n" + big + b"data: after\n\n")
    assert events == [("message", b"before")]
    assert reader.overflow


def test_sse_events_up_to_the_limit_pass() -> None:
    reader = SseReader(LIMIT)
    exact = b"w" * LIMIT
    assert reader.feed(b"data: " + exact + b"\n\n") == [("message", exact)]
    assert not reader.overflow


# -- NDJSON ---------------------------------------------------------------------------


def test_ndjson_lines_split_anywhere_blank_lines_dropped() -> None:
    assert ndjson_lines(b'{"a":1}\n\n  \n{"b"', b":2}\r\n\r\n{") == [b'{"a":1}', b'{"b":2}\r']


def test_ndjson_rest_is_the_unfinished_line() -> None:
    reader = NdjsonReader(LIMIT)
    reader.feed(b'{"a":1}\n{"b":')
    assert reader.rest == b'{"b":'
    reader.feed(b"2}\n \n")
    assert reader.rest == b""


def test_ndjson_an_unfinished_line_past_the_limit_overflows() -> None:
    reader = NdjsonReader(LIMIT)
    assert reader.feed(b'{"ok":1}\n' + b"x" * 600) == [b'{"ok":1}']
    assert not reader.overflow
    reader.feed(b"x" * 600)
    assert reader.overflow


def test_ndjson_a_whole_line_past_the_limit_keeps_the_lines_before_it() -> None:
    reader = NdjsonReader(LIMIT)
    lines = reader.feed(b'{"n":1}\n' + b"q" * (LIMIT + 1) + b'\n{"n":2}\n')
    assert lines == [b'{"n":1}']
    assert reader.overflow


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=120), max_size=10))
def test_ndjson_any_split_gives_the_same_lines(cuts: list[int]) -> None:
    stream = b'{"a":1}\n\n{"b":[1,2]}\r\n{"c":"\\n"}\n   \n{"d":null}\n'
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert ndjson_lines(*pieces) == [b'{"a":1}', b'{"b":[1,2]}\r', b'{"c":"\\n"}', b'{"d":null}']
