"""Prompt tokens written to Anthropic's cache are billed at the cache-write rate, and a
reservation covers the worst case of every prompt token written."""

from __future__ import annotations

from sidecar.budget.prices import PICO_PER_USD, Price, load_price_table

MILLION = 1_000_000


def test_cache_writes_cost_the_write_rate() -> None:
    sonnet = load_price_table().lookup("claude-sonnet-4-20250514")
    assert sonnet is not None
    # 50K plain + 50K read + 50K written prompt tokens (under the long-context tier),
    # 50K output tokens.
    tokens = 50_000
    cost = sonnet.cost(3 * tokens, tokens, cached=tokens, written=tokens)
    assert cost == (3.00 + 0.30 + 3.75 + 15.00) * PICO_PER_USD * tokens // MILLION
    # The worst case of a call: the whole prompt written to the cache.
    assert sonnet.worst(tokens, 0) == 3.75 * PICO_PER_USD * tokens // MILLION
    assert sonnet.worst(tokens, 0) >= sonnet.cost(tokens, 0, cached=tokens // 2)


def test_without_a_write_rate_writes_cost_the_input_rate() -> None:
    price = Price(input=10, output=20, cached_input=1)
    assert price.cost(100, 10, written=60) == 100 * 10 + 10 * 20
    assert price.worst(100, 10) == price.cost(100, 10)
    # Counts that do not add up are clamped to the prompt, never billed twice.
    assert price.cost(100, 0, cached=80, written=80) == 80 * 1 + 20 * 10
    flash = load_price_table().lookup("gemini-2.5-flash")
    assert flash is not None
    assert flash.cache_write_input == 0
