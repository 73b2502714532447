"""Pure routing: request + snapshots -> an ordered plan of candidate deployments."""

from sidecar.routing.hedging import Hedge
from sidecar.routing.plan import (
    BudgetView,
    Candidate,
    HealthView,
    RoutePlan,
    plan,
    request_text,
)
from sidecar.routing.policy import RoutingPolicy, compile_routing, detect_sensitive
from sidecar.routing.tokens import estimate_tokens

__all__ = [
    "BudgetView",
    "Candidate",
    "HealthView",
    "Hedge",
    "RoutePlan",
    "RoutingPolicy",
    "compile_routing",
    "detect_sensitive",
    "estimate_tokens",
    "plan",
    "request_text",
]
