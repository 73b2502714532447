"""The routing decision: a pure function from a request and snapshots to a plan.

No I/O, no awaits, no clock reads: everything the decision depends on is passed
in, which keeps it sub-millisecond and testable without servers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.config.model import Deployment, SidecarConfig
from sidecar.errors import PrivacyBlocked, UnknownModel
from sidecar.types import ChatRequest, Locality


@dataclass(frozen=True, slots=True)
class Candidate:
    deployment: Deployment
    reason: str


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Deployments to try, in order, each with the reason it is there."""

    model: str
    candidates: tuple[Candidate, ...]
    sensitive: bool = False
    notes: tuple[str, ...] = ()
    estimated_prompt_tokens: int = 0


def plan(
    request: ChatRequest,
    config: SidecarConfig,
    rand: Callable[[], float] = random.random,
) -> RoutePlan:
    """Plan the deployments of the requested alias.

    Within a group, deployments are ordered by a weighted shuffle so traffic
    spreads across them and the rest stay as in-group failover.
    """
    group = config.groups.get(request.model)
    if group is None:
        raise UnknownModel(request.model, list(config.groups))
    sensitive = request.hints.local_only
    notes: list[str] = []
    deployments = list(group.deployments)
    if sensitive:
        kept = [d for d in deployments if d.locality is Locality.LOCAL]
        if len(kept) < len(deployments):
            notes.append("sensitive: cloud excluded")
        if not kept:
            raise PrivacyBlocked(
                f"request held back for privacy: model {request.model!r} has no local deployment"
            )
        deployments = kept
    ordered = _weighted_order(deployments, rand)
    reason = f"alias {group.name}"
    return RoutePlan(
        model=request.model,
        candidates=tuple(Candidate(d, reason) for d in ordered),
        sensitive=sensitive,
        notes=tuple(notes),
    )


def _weighted_order(deployments: list[Deployment], rand: Callable[[], float]) -> list[Deployment]:
    if len(deployments) < 2:
        return deployments
    # Efraimidis-Spirakis: a weighted random permutation in one pass.
    keyed = sorted(deployments, key=lambda d: rand() ** (1.0 / max(d.weight, 1e-9)))
    keyed.reverse()
    return keyed
