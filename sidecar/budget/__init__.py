"""Budgets and spend: prices, caps per window, reserve-then-settle on a ledger, the spend log.

The engine owns one `Budgets`; its egress reserves before every cloud call and settles
after it, the planner reads its `BudgetView`, and every call's `SpendRecord` goes onto
its spend log. Local deployments never touch the ledger.
"""

from sidecar.budget.prices import Price, PriceTable, load_price_table, resolve_prices
from sidecar.budget.service import Budgets, BudgetView, Ticket, caller_of
from sidecar.budget.windows import Window, parse_duration, window_at

__all__ = [
    "BudgetView",
    "Budgets",
    "Price",
    "PriceTable",
    "Ticket",
    "Window",
    "caller_of",
    "load_price_table",
    "parse_duration",
    "resolve_prices",
    "window_at",
]
