"""Every scenario of the suite, in the order a full run takes them, and the optional ones
that run only when named (`--only`)."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks import (
    budget_bench,
    failover,
    footprint,
    hybrid,
    observability,
    overhead,
    peers,
    route_bench,
)
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
        footprint.SCENARIO,
    )
}

# Not part of `make bench`: `make bench-peers` installs the peer first, then names it.
OPTIONAL: Mapping[str, Scenario] = {peers.SCENARIO.name: peers.SCENARIO}
KNOWN: Mapping[str, Scenario] = {**SCENARIOS, **OPTIONAL}
