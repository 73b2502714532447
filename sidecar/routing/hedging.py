"""The hedging decision: whether a slow first candidate gets company, and when.

A group's retry policy may set `hedge_after_ms`: when the running attempt has no
first token after that long, the next candidate starts too and the first to
answer wins. Cloud candidates join a hedge only with `hedge_to_cloud`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidecar.config.model import SidecarConfig

if TYPE_CHECKING:
    from sidecar.routing.plan import Candidate


@dataclass(frozen=True, slots=True)
class Hedge:
    after: float  # seconds without a first token before the next candidate starts too
    to_cloud: bool  # whether a cloud candidate may be the one that starts


def hedge_for(candidates: Sequence[Candidate], config: SidecarConfig) -> Hedge | None:
    """The hedge of the first candidate's group, None when it does not hedge."""
    if len(candidates) < 2:
        return None
    group = candidates[0].deployment.model_group
    policy = config.router_settings.model_group_retry_policy.get(group)
    if policy is None or policy.hedge_after_ms is None:
        return None
    return Hedge(policy.hedge_after_ms / 1000, policy.hedge_to_cloud)
