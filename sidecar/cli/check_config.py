"""`llm-sidecar check-config`: validate a configuration and print its models."""

from __future__ import annotations

from sidecar.budget import resolve_prices
from sidecar.budget.budgets import BudgetBook
from sidecar.budget.prices import PICO_PER_USD, Price
from sidecar.config import SidecarConfig, load_config
from sidecar.config.table import render_model_table
from sidecar.redaction import redact, redact_logs
from sidecar.routing import compile_routing
from sidecar.types import Locality

_PER_MILLION = PICO_PER_USD / 10**6


def check_config(path: str) -> str:
    """The model table of the configuration at `path`; raises ConfigError naming each problem.

    The routing sections are compiled and every cloud deployment's price resolved too,
    so that what `serve` would refuse is refused here.
    """
    # The table lists the warnings; logging them too would print each one twice.
    config = load_config(path, log_warnings=False)
    redact_logs(config.secrets)
    compile_routing(config)
    prices = resolve_prices(config)
    book = BudgetBook(config)
    text = "\n".join([render_model_table(config), "", *render_spend(config, prices, book)])
    # The table shows no secret by construction; this holds it to that.
    return "\n".join(redact(line, config.secrets, limit=None) for line in text.split("\n"))


def render_spend(config: SidecarConfig, prices: dict[str, Price], book: BudgetBook) -> list[str]:
    """Each cloud deployment's price (USD per 1M tokens, and where it came from) and the caps."""
    lines = ["prices (USD per 1M tokens: input / cached input / output)"]
    for d in config.deployments:
        if d.locality is Locality.LOCAL:
            continue
        p = prices[d.id]
        cached = p.cached_input or p.input
        lines.append(
            f"  {d.id}: {p.input / _PER_MILLION:g} / {cached / _PER_MILLION:g} / "
            f"{p.output / _PER_MILLION:g} ({p.source or 'price table'})"
        )
    if len(lines) == 1:
        lines.append("  (no cloud deployments)")
    lines.append("budgets")
    budgets = book.configured()
    for b in budgets:
        lines.append(
            f"  {b.id}: ${b.cap_usd:,.2f} {f'per {b.duration}' if b.duration else 'in all'}"
        )
    if not budgets:
        lines.append("  (none: cloud spend is recorded but not capped)")
    return lines
