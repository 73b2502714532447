"""The token estimate against counts recorded from real tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.routing.tokens import (
    PER_MESSAGE_TOKENS,
    PER_REQUEST_TOKENS,
    chat_overhead,
    estimate_tokens,
)

SAMPLES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "data" / "token_samples.yaml").read_text(encoding="utf-8")
)["samples"]
ENCODINGS = ("cl100k_base", "o200k_base")


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_sample_is_within_15_percent(sample: dict[str, Any], encoding: str) -> None:
    exact = sample[encoding]
    estimate = estimate_tokens(sample["text"])
    assert abs(estimate / exact - 1) <= 0.15, (estimate, exact)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_all_samples_together_are_within_6_percent(encoding: str) -> None:
    exact = sum(s[encoding] for s in SAMPLES)
    estimate = sum(estimate_tokens(s["text"]) for s in SAMPLES)
    print(f"{encoding}: estimate {estimate} for {exact} tokens ({estimate / exact - 1:+.1%})")
    assert abs(estimate / exact - 1) <= 0.06


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_long_text_is_sampled_and_stays_close(encoding: str) -> None:
    # Far above the sampling limit: the estimate comes from slices of the text.
    repeats = 40
    text = "\n".join(s["text"] for s in SAMPLES) + "\n"
    exact = sum(s[encoding] for s in SAMPLES) * repeats
    estimate = estimate_tokens(text * repeats)
    assert abs(estimate / exact - 1) <= 0.10, (estimate, exact)


def test_sanity() -> None:
    assert estimate_tokens("") == 0
    assert 1 <= estimate_tokens("hello") <= 2
    assert estimate_tokens("word " * 1000) == pytest.approx(1000, rel=0.2)
    # Digits are dear, and text outside ASCII is counted per character.
    assert estimate_tokens("1234567890") > estimate_tokens("abcdefghij")
    assert estimate_tokens("日本語のテキストです") >= 6
    # Lone surrogates (which some JSON decoders let through) do not raise.
    assert estimate_tokens("a\ud800b") >= 1
    assert chat_overhead(3) == PER_REQUEST_TOKENS + 3 * PER_MESSAGE_TOKENS


def test_recorded_counts_match_tiktoken() -> None:
    """Re-derives the recorded counts where tiktoken (and its encodings) are available."""
    tiktoken = pytest.importorskip("tiktoken")
    for encoding in ENCODINGS:
        try:
            enc = tiktoken.get_encoding(encoding)
        except Exception as exc:  # the encoding files are downloaded on first use
            pytest.skip(f"{encoding} unavailable: {exc}")
        for sample in SAMPLES:
            assert len(enc.encode(sample["text"])) == sample[encoding], sample["name"]
