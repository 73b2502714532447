"""Every scenario of the suite, in the order a full run takes them."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks import budget_bench, failover, hybrid, observability, overhead, route_bench
from benchmarks.suite import Scenario

SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        route_bench.SCENARIO,
        overhead.SCENARIO,
        hybrid.SCENARIO,
        failover.SCENARIO,
        budget_bench.SCENARIO,
        observability.SCENARIO,
    )
}
