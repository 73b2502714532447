"""Prices, windows, worst cases and which caps a call counts toward."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sidecar.budget import load_price_table, resolve_prices, window_at
from sidecar.budget.budgets import BudgetBook
from sidecar.budget.prices import PICO_PER_USD, Price, micros
from sidecar.budget.worstcase import worst_case
from sidecar.errors import ConfigError
from sidecar.types import ChatRequest, GenerationParams, Message
from tests.harness import make_config


def _unix(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def _cloud(model: str, **info: Any) -> tuple[str, str, dict[str, Any]]:
    return ("cloud", model, {"api_key": "k", "model_info": {"locality": "cloud", **info}})


def test_the_bundled_table_is_dated_and_prices_common_cloud_models() -> None:
    table = load_price_table()
    assert table.as_of
    gpt4o = table.lookup("gpt-4o")
    assert gpt4o is not None
    assert gpt4o.source
    # $2.50 / $10 per 1M tokens, cached input $1.25.
    assert gpt4o.cost(1_000_000, 0) == 2.5 * PICO_PER_USD
    assert gpt4o.cost(0, 1_000_000) == 10 * PICO_PER_USD
    assert gpt4o.cost(1_000_000, 0, cached=1_000_000) == 1.25 * PICO_PER_USD
    # A dated snapshot falls under its family; the mini is not priced as 4o.
    assert table.lookup("gpt-4o-2024-08-06") == gpt4o
    mini = table.lookup("gpt-4o-mini-2024-07-18")
    assert mini is not None
    assert mini.input < gpt4o.input
    assert table.lookup("some-unknown-model") is None


def test_long_context_rates_apply_to_the_whole_request() -> None:
    pro = load_price_table().lookup("gemini-2.5-pro")
    assert pro is not None
    short = pro.cost(200_000, 1000)
    long = pro.cost(200_001, 1000)
    assert long > short * 1.9


def test_a_cloud_deployment_without_a_price_is_a_configuration_error() -> None:
    config = make_config([_cloud("openai/secret-model")])
    with pytest.raises(ConfigError) as caught:
        resolve_prices(config)
    assert "cloud/0" in str(caught.value)
    assert "model_info.free" in str(caught.value)


def test_model_info_prices_free_marker_and_base_model() -> None:
    config = make_config(
        [
            _cloud("openai/mine", input_cost_per_token=1e-6, output_cost_per_token=2e-6),
            (
                "free",
                "openai/gratis",
                {"api_key": "k", "model_info": {"locality": "cloud", "free": True}},
            ),
            (
                "based",
                "openai/my-4o",
                {"api_key": "k", "model_info": {"locality": "cloud", "base_model": "gpt-4o"}},
            ),
            ("local", "ollama/llama3.2", {}),
        ]
    )
    prices = resolve_prices(config)
    assert prices["cloud/0"].cost(10, 5) == 10 * 10**6 + 5 * 2 * 10**6
    assert prices["free/0"].free
    assert prices["based/0"] == load_price_table().lookup("gpt-4o")
    assert prices["local/0"].free


def test_micros_round_up() -> None:
    assert micros(1) == 1
    assert micros(10**6) == 1
    assert micros(10**6 + 1) == 2
    assert micros(0) == 0


@pytest.mark.parametrize(
    ("duration", "now", "start", "end"),
    [
        (
            "30s",
            _unix(2026, 3, 1, 10, 0, 45),
            _unix(2026, 3, 1, 10, 0, 30),
            _unix(2026, 3, 1, 10, 1),
        ),
        ("10m", _unix(2026, 3, 1, 10, 17), _unix(2026, 3, 1, 10, 10), _unix(2026, 3, 1, 10, 20)),
        ("24h", _unix(2026, 3, 1, 23, 59), _unix(2026, 3, 1), _unix(2026, 3, 2)),
        ("1d", _unix(2026, 3, 1, 0, 0, 1), _unix(2026, 3, 1), _unix(2026, 3, 2)),
        # 2026-03-04 is a Wednesday: the week started on Monday the 2nd.
        ("1w", _unix(2026, 3, 4, 12), _unix(2026, 3, 2), _unix(2026, 3, 9)),
        ("7d", _unix(2026, 3, 4, 12), _unix(2026, 3, 2), _unix(2026, 3, 9)),
        # A calendar month, whatever its length.
        ("1mo", _unix(2026, 2, 28, 23, 59), _unix(2026, 2, 1), _unix(2026, 3, 1)),
        ("1mo", _unix(2026, 12, 31, 12), _unix(2026, 12, 1), _unix(2027, 1, 1)),
        ("3mo", _unix(2026, 5, 15), _unix(2026, 4, 1), _unix(2026, 7, 1)),
    ],
)
def test_windows_are_aligned(duration: str, now: float, start: float, end: float) -> None:
    window = window_at(duration, now)
    assert window is not None
    assert (window.start, window.end) == (start, end)


def test_a_cap_without_duration_has_one_window_forever() -> None:
    assert window_at(None, 1e9) is None


def test_worst_case_bounds_the_prompt_and_limits_the_answer() -> None:
    config = make_config([_cloud("gpt-4o")])
    deployment = config.deployments[0]
    price = resolve_prices(config)[deployment.id]
    text = "héllo wörld " * 500
    request = ChatRequest("cloud", (Message("user", text),))
    case = worst_case(deployment, request, price, 4096)
    # No tokenizer makes more tokens than the text has bytes.
    assert case.prompt_bound >= len(text.encode())
    assert case.prompt_estimate < case.prompt_bound
    # No max_tokens asked: the model's own output limit, sent upstream.
    assert case.answer_room == 16384
    assert case.limit_upstream
    asked = ChatRequest("cloud", (Message("user", "hi"),), GenerationParams(max_tokens=50))
    limited = worst_case(deployment, asked, price, 4096)
    assert (limited.answer_room, limited.limit_upstream) == (50, False)


def test_which_caps_a_call_counts_toward() -> None:
    config = make_config(
        [
            (
                "cloud",
                "gpt-4o",
                {
                    "api_key": "k",
                    "max_budget": 3,
                    "budget_duration": "1d",
                    "model_info": {"max_budget": 50, "budget_duration": "30d"},
                },
            ),
            ("local", "ollama/llama3.2", {}),
        ],
        general_settings={"max_budget": 200, "budget_duration": "1mo"},
        litellm_settings={"max_budget": 300},
        router_settings={
            "provider_budget_config": {"openai": {"budget_limit": 100, "time_period": "1d"}}
        },
        budget={
            "callers": {"billing": {"max_budget": 5}},
            "default_caller": {"max_budget": 1, "budget_duration": "1h"},
        },
    )
    book = BudgetBook(config)
    cloud, local = config.deployments
    ids = {b.id: (b.cap_usd, b.duration) for b in book.for_call(cloud, "billing")}
    assert ids == {
        "global": (200, "1mo"),
        "global/litellm": (300, None),
        "model_group:cloud": (50, "30d"),
        "deployment:cloud/0": (3, "1d"),
        "provider:openai": (100, "1d"),
        "caller:billing": (5, None),
    }
    others = {b.id: b.cap_usd for b in book.for_call(cloud, "someone")}
    assert others["caller:someone"] == 1
    assert book.for_call(local, "billing") == ()


def test_redis_settings_build_the_ledger_address() -> None:
    config = make_config(
        [("local", "ollama/llama3.2", {})],
        router_settings={"redis_host": "127.0.0.1", "redis_port": 6390, "redis_password": "p@ss"},
    )
    assert config.budget.redis_url == "redis://:p%40ss@127.0.0.1:6390/0"
    assert "p@ss" not in repr(config.budget)


def test_budget_section_errors_name_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(
            [("local", "ollama/llama3.2", {})],
            budget={"ledger": "etcd", "callers": {"a": {"budget_duration": "1d"}}},
        )
    text = str(caught.value)
    assert "budget.ledger" in text
    assert "budget.callers.a.max_budget: required" in text


def test_price_is_exact_integer_arithmetic() -> None:
    price = Price(input=150_000, output=600_000)
    assert price.cost(3, 7) == 3 * 150_000 + 7 * 600_000
