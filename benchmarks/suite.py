"""What every scenario shares: the scale it runs at, what it reports, and how it is run.

A scenario is a name, a number of progress steps and an async `run(context)`
that returns an Outcome: flat metrics (named `<scenario>.<...>`, the names
`targets.yaml` and `compare` refer to) plus JSON-able detail for the report
and the plots.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Scale(enum.StrEnum):
    FULL = "full"  # `make bench`: the figures to quote
    QUICK = "quick"  # `make bench-quick`: every scenario, under two minutes on 2 cores
    SMOKE = "smoke"  # the test suite's: about a second per scenario, figures meaningless


class Progress(Protocol):
    def advance(self, note: str = "") -> None:
        """One planned step of the current scenario is done."""


@dataclass(frozen=True, slots=True)
class Context:
    scale: Scale
    progress: Progress


@dataclass(slots=True)
class Outcome:
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    steps: Callable[[Scale], int]  # progress steps `run` will report at that scale
    run: Callable[[Context], Awaitable[Outcome]]
    # Seconds after which the scenario is abandoned (an error in the results), per scale.
    time_limit: Callable[[Scale], float]
    # The report's section body (Markdown) from Outcome.data.
    markdown: Callable[[Mapping[str, Any]], str]
    # What the run prints after the targets table, from Outcome.data (nothing when None).
    summary: Callable[[Mapping[str, Any]], str] | None = None
