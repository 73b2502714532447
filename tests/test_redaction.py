"""The one redaction function, the log filter built on it, and the nesting check."""

from __future__ import annotations

import logging

import pytest

from sidecar.nesting import MAX_DEPTH, too_deep
from sidecar.redaction import REDACTED, RedactingFilter, clip, redact, shown

SECRET = "zq-7f3a9c1e5b"  # shaped like no known key: only the configured list finds it


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        pytest.param(f"Incorrect API key provided: {SECRET}.", SECRET, id="configured"),
        pytest.param(
            "headers: {'Authorization': 'Bearer abc.def-123'}", "abc.def-123", id="bearer"
        ),
        pytest.param("authorization: bearer tok_9Zx", "tok_9Zx", id="bearer-lowercase"),
        pytest.param("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", id="basic"),
        pytest.param("x-api-key: 0123456789abcdef", "0123456789abcdef", id="x-api-key"),
        pytest.param('{"api_key": "hunter2hunter2"}', "hunter2hunter2", id="api_key-json"),
        pytest.param("GET /v1beta/models?key=AIzaSyA-1234567890abcdefghij", "AIzaSyA", id="query"),
        pytest.param("key sk-proj-AbCdEf0123456789 rejected", "sk-proj-AbCdEf", id="sk"),
        pytest.param("sk-ant-api03-abcdefghijkl", "abcdefghijkl", id="sk-ant"),
        pytest.param("token ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abc", id="github"),
        pytest.param("AKIAABCDEFGHIJKLMNOP in use", "AKIAABCDEFGHIJKLMNOP", id="aws"),
        pytest.param("see https://alice:s3cr3t@vllm.internal:8000/v1", "s3cr3t", id="userinfo"),
        pytest.param("http://only-a-token@host/", "only-a-token", id="userinfo-token"),
    ],
)
def test_redact_removes_every_kind_of_credential(text: str, gone: str) -> None:
    out = redact(text, [SECRET])
    assert gone not in out
    assert REDACTED in out


def test_redact_keeps_ordinary_text_and_cuts_it() -> None:
    text = "model 'llama3' is not pulled; the maximum context length is 4096 tokens"
    assert redact(text) == text
    long = redact("x" * 10_000, limit=50)
    assert len(long) == 50
    assert long.endswith("…")
    assert redact("a\nb\x1b[31mc\x00") == "a b [31mc "


def test_a_secret_straddling_the_cut_is_still_found() -> None:
    secret = "zz-" + "q" * 60
    text = "." * 290 + secret
    out = redact(text, [secret], limit=300)
    assert "qqqqq" not in out


def test_short_configured_values_are_not_searched() -> None:
    # A three-letter "secret" would garble every message it appears in.
    assert redact("the cat sat", ["cat"]) == "the cat sat"


def test_clip_and_shown() -> None:
    assert clip("abc", 5) == "abc"
    assert clip("abcdef", 4) == "abc…"
    assert shown("a\nb" + "c" * 200, 10) == repr("a\nbcccccc…")


def test_filter_redacts_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter([SECRET]))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("upstream said %s", f"bad key {SECRET}")
        try:
            raise ValueError(f"Authorization: Bearer {SECRET}")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert len(records) == 2
    assert all(SECRET not in line for line in records)
    assert "Traceback" in records[1]
    assert "\n" in records[1]  # still one line per traceback line


def test_too_deep() -> None:
    value: object = "leaf"
    for _ in range(MAX_DEPTH):
        value = [value]
    assert not too_deep(value)
    assert too_deep({"a": value})
    assert not too_deep({"a": [1, {"b": "c"}], "d": "e"})
