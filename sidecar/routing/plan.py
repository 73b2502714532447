"""The routing decision: a pure function from a request and snapshots to a plan.

No I/O, no awaits, no clock reads: everything the decision depends on is passed
in, which keeps it sub-millisecond and testable without servers.

The steps, each leaving a reason or a note in the plan:

1. Sensitivity: the caller's `local_only` hint; `no_fallback` (hint, or
   metadata that `parse_flag` reads as true) when `privacy.no_fallback_means_local`;
   else the detector over all message text and tool-call arguments. (When the caller
   already marked the request, the detector does not run.)
2. The alias: an explicit model name wins; with the auto alias (or no model),
   a `task` metadata tag with a rule picks the alias, else the complexity
   scorer picks a tier, and a sensitive request takes the nearest tier whose
   alias has a local deployment.
3. The deployments: cloud ones go when the request is sensitive; with context
   checks on (the default, whatever `router_settings.enable_pre_call_checks`
   says: an upstream that cannot hold a prompt rejects it or, like Ollama,
   silently truncates it), those whose known window cannot hold the estimated
   prompt plus the output room are skipped, and when none is left the
   `context_window_fallbacks` chain is followed (not with `no_fallback`).
   The routing strategy orders the rest (weighted shuffle, least busy, or
   lowest time to first token with some exploration).
4. Resilience: the group again for each retry (`num_retries`), then its
   failure fallbacks (the group's retry policy, else `fallbacks`, else
   `default_fallbacks`), filtered by the same privacy and context rules, and
   none with `no_fallback`. Deployments the health view reports down go last,
   or are left out with `enable_pre_call_checks`.
5. Never fail without trying: when fewer than `health.panic_threshold` of the
   plan's deployments look healthy (every one of them, in the worst case), the
   unhealthy ones are kept, soonest to recover first, and listed in
   `RoutePlan.despite_health` so that the engine tries them although they are
   cooling down, as Envoy routes to every host under its panic threshold. A
   sensitive request whose only local deployment is cooling is tried there
   rather than refused untried.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sidecar.config.model import Deployment, SidecarConfig
from sidecar.errors import ContextWindowExceeded, PrivacyBlocked, UnknownModel
from sidecar.routing.hedging import Hedge, hedge_for
from sidecar.routing.policy import RoutingPolicy, compile_routing
from sidecar.routing.tokens import chat_overhead, estimate_tokens
from sidecar.types import ChatRequest, Locality, parse_flag

# Share of latency-based decisions that shuffle instead, to keep measuring every deployment.
_EXPLORE = 0.1


class HealthView(Protocol):
    """What the health tracker knows: who is up, how busy, how fast."""

    def is_available(self, deployment_id: str) -> bool: ...

    def in_flight(self, deployment_id: str) -> int: ...

    def ttft(self, deployment_id: str) -> float | None: ...

    def cooldown_left(self, deployment_id: str) -> float: ...


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
    # Why the request is sensitive: detector names, or local_only / no_fallback.
    sensitive_reasons: tuple[str, ...] = ()
    # The caller asked for no fallback beyond the planned group.
    no_fallback: bool = False
    # When to start the next candidate beside a slow one; None: one at a time.
    hedge: Hedge | None = None
    # Deployments to try although they look unhealthy (under the panic threshold).
    despite_health: frozenset[str] = frozenset()


def plan(
    request: ChatRequest,
    config: SidecarConfig,
    policy: RoutingPolicy | None = None,
    health: HealthView | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> RoutePlan:
    """Plan the deployments for `request`.

    `policy` is `compile_routing(config)`, built once at start-up; without it the
    configuration is compiled on every call, which is only fit for one-off use.
    Raises UnknownModel, PrivacyBlocked or ContextWindowExceeded.
    """
    if policy is None:
        policy = compile_routing(config)
    elif policy.config is not config:
        raise ValueError("the routing policy was compiled from another configuration")
    text = request_text(request)
    tokens = estimate_tokens(text) + chat_overhead(len(request.messages))
    no_fallback = request.hints.no_fallback or _is_true(request.metadata.get("no_fallback"))
    reasons = _sensitive_reasons(request, policy, text, no_fallback)
    notes: list[str] = []
    alias, reason = _resolve_alias(request, policy, text, tokens, reasons, notes)
    if reasons:
        notes.append(f"sensitive ({', '.join(reasons)}): cloud excluded")
    group, chosen, reason = _deployments(
        alias, reason, request, policy, tokens, reasons, no_fallback, notes
    )
    strategy = policy.config.router_settings.routing_strategy
    candidates = [Candidate(d, reason) for d in _order(chosen, strategy, health, rand)]
    retry = policy.config.router_settings.model_group_retry_policy.get(group)
    retries = retry.num_retries if retry else policy.config.litellm_settings.num_retries
    first = list(candidates)
    for n in range(1, retries + 1):
        candidates += [Candidate(c.deployment, f"{c.reason}; retry {n}") for c in first]
    if not no_fallback:
        for fallback in _fallbacks(policy.config, group):
            kept = _fitting(policy, fallback, request, tokens, reasons, notes, _Held())
            ordered = _order(kept, strategy, health, rand)
            candidates += [Candidate(d, f"fallback {group} -> {fallback}") for d in ordered]
    despite: frozenset[str] = frozenset()
    if health is not None:
        candidates, despite = _by_health(candidates, policy.config, health, notes)
    return RoutePlan(
        model=alias,
        candidates=tuple(candidates),
        sensitive=bool(reasons),
        notes=tuple(notes),
        estimated_prompt_tokens=tokens,
        sensitive_reasons=reasons,
        no_fallback=no_fallback,
        hedge=hedge_for(candidates, policy.config),
        despite_health=despite,
    )


def _by_health(
    candidates: list[Candidate], config: SidecarConfig, health: HealthView, notes: list[str]
) -> tuple[list[Candidate], frozenset[str]]:
    """Healthy candidates first; the unhealthy left out, put last, or, under the panic
    threshold, put last to be tried anyway (the second value), soonest to recover first."""
    planned = dict.fromkeys(c.deployment.id for c in candidates)
    down = {d for d in planned if not health.is_available(d)}
    if not down:
        return candidates, frozenset()
    up = [c for c in candidates if c.deployment.id not in down]
    rest = [c for c in candidates if c.deployment.id in down]
    threshold = config.health.panic_threshold
    healthy = len(planned) - len(down)
    if threshold > 0 and healthy < threshold * len(planned):
        rest.sort(key=lambda c: health.cooldown_left(c.deployment.id))
        order = ", ".join(dict.fromkeys(c.deployment.id for c in rest))
        notes.append(
            f"unhealthy, tried last: {order} (panic: {healthy} of {len(planned)} healthy, "
            f"under the {threshold:.0%} threshold: tried anyway, soonest to recover first)"
        )
        return up + rest, frozenset(down)
    listed = ", ".join(sorted(down))
    if config.router_settings.enable_pre_call_checks and up:
        notes.append(f"pre-call checks: left out unhealthy {listed}")
        return up, frozenset()
    notes.append(f"unhealthy, tried last: {listed}")
    return up + rest, frozenset()


def request_text(request: ChatRequest) -> str:
    """All text the request would send upstream: contents and tool-call arguments."""
    parts: list[str] = []
    for message in request.messages:
        if message.content:
            parts.append(message.content)
        for call in message.tool_calls:
            parts.append(call.name)
            parts.append(call.arguments)
    return "\n".join(parts)


def _is_true(value: str | None) -> bool:
    return value is not None and parse_flag(value) is True


def _sensitive_reasons(
    request: ChatRequest, policy: RoutingPolicy, text: str, no_fallback: bool
) -> tuple[str, ...]:
    reasons: list[str] = []
    if request.hints.local_only:
        reasons.append("local_only")
    if no_fallback and policy.privacy.no_fallback_means_local:
        reasons.append("no_fallback")
    if reasons or policy.detector is None:
        return tuple(reasons)
    return policy.detector.detect(text)


def _resolve_alias(
    request: ChatRequest,
    policy: RoutingPolicy,
    text: str,
    tokens: int,
    reasons: tuple[str, ...],
    notes: list[str],
) -> tuple[str, str]:
    """(alias, reason) for the request's model, task tag or complexity."""
    groups = policy.config.groups
    auto = policy.auto_alias
    model = request.model or auto
    task = request.metadata.get("task", "")
    if model != auto:
        if model not in groups:
            known = [*groups, auto] if policy.tiers else list(groups)
            raise UnknownModel(model, known)
        if task:
            notes.append(f"task {task!r} ignored: the request names model {model}")
        return model, f"alias {model}"
    if task:
        target = policy.rules.tasks.get(task)
        if target is None:
            notes.append(f"task {task!r} has no rule: auto routing")
        elif target != auto:
            return target, f"task {task} -> {target}"
    verdict = policy.scorer.score(text, tokens, len(request.messages))
    tiers = policy.local_tiers if reasons else policy.tiers
    chosen = tiers.get(verdict.tier)
    if chosen is None:
        if reasons and verdict.tier in policy.tiers:
            raise PrivacyBlocked(
                f"request held back for privacy ({', '.join(reasons)}): no alias of the auto "
                "tiers has a local deployment"
            )
        raise UnknownModel(auto, list(groups))
    if chosen.note:
        notes.append(f"auto: {chosen.note}")
    return chosen.alias, f"auto: {verdict.why} -> {chosen.alias}"


def _deployments(
    alias: str,
    reason: str,
    request: ChatRequest,
    policy: RoutingPolicy,
    tokens: int,
    reasons: tuple[str, ...],
    no_fallback: bool,
    notes: list[str],
) -> tuple[str, list[Deployment], str]:
    """The first group of the context chain with deployments left, its name and reason."""
    chain = (alias,) if no_fallback else (alias, *policy.context_chains.get(alias, ()))
    held = _Held()
    for name in chain:
        kept = _fitting(policy, name, request, tokens, reasons, notes, held)
        if kept:
            if name == alias:
                return name, kept, reason
            notes.append(f"context fallback: {alias} -> {name}")
            return name, kept, f"{reason}; context fallback -> {name}"
    raise held.error(alias, chain, reasons)


def _fitting(
    policy: RoutingPolicy,
    group: str,
    request: ChatRequest,
    tokens: int,
    reasons: tuple[str, ...],
    notes: list[str],
    held: _Held,
) -> list[Deployment]:
    """The group's deployments that may take the request: local when sensitive, and
    with a context window that holds the prompt and the output room."""
    checks = policy.rules.context.checks
    requested = request.params.max_tokens
    default_output = policy.rules.context.default_output_tokens
    kept: list[Deployment] = []
    for d in policy.config.groups[group].deployments:
        if reasons and d.locality is not Locality.LOCAL:
            held.privacy += 1
            continue
        window = d.context_window
        if checks and window is not None:
            # The room an answer needs: what the caller asked for, else a typical
            # answer. A deployment's default cap (litellm_params.max_tokens) is a
            # ceiling, not an expected length: reserving all of it would make an
            # 8K model with an 8K default cap refuse every prompt.
            cap = d.max_output_tokens or default_output
            needed = tokens + (requested or min(default_output, cap))
            if needed > window:
                notes.append(f"context {needed:,} > {window:,}: skipped {d.id}")
                held.too_small(needed, window)
                continue
        kept.append(d)
    return kept


def _fallbacks(config: SidecarConfig, group: str) -> tuple[str, ...]:
    """Groups to try when `group` fails: its retry policy's, else its own, else the default."""
    policy = config.router_settings.model_group_retry_policy.get(group)
    if policy is not None and policy.fallbacks:
        chain = policy.fallbacks
    else:
        chain = config.litellm_settings.fallbacks.get(group, ()) or (
            config.litellm_settings.default_fallbacks
        )
    return tuple(name for name in dict.fromkeys(chain) if name != group)


def _order(
    deployments: list[Deployment],
    strategy: str,
    health: HealthView | None,
    rand: Callable[[], float],
) -> list[Deployment]:
    """Order one group's deployments by the routing strategy."""
    if len(deployments) < 2 or health is None:
        return _weighted_order(deployments, rand)
    if strategy == "least-busy":
        return sorted(deployments, key=lambda d: (health.in_flight(d.id), rand()))
    if strategy == "latency-based-routing" and rand() >= _EXPLORE:
        # Unmeasured deployments sort first so they get measured; the occasional
        # shuffle (exploration) lets a recovered deployment show it is fast again.
        return sorted(deployments, key=lambda d: (health.ttft(d.id) or 0.0, rand()))
    return _weighted_order(deployments, rand)


@dataclass(slots=True)
class _Held:
    """Why deployments were skipped, for the error when none is left."""

    privacy: int = 0
    context: int = 0
    largest: int = 0
    needed: int = 0

    def too_small(self, needed: int, window: int) -> None:
        self.context += 1
        if window >= self.largest:
            self.largest = window
            self.needed = needed

    def error(
        self, alias: str, chain: tuple[str, ...], reasons: tuple[str, ...]
    ) -> PrivacyBlocked | ContextWindowExceeded:
        if not self.privacy:
            return ContextWindowExceeded(self.needed, self.largest)
        where = repr(alias) if len(chain) == 1 else f"{alias!r} or its context-window fallbacks"
        why = ", ".join(reasons)
        if not self.context:
            return PrivacyBlocked(
                f"request held back for privacy ({why}): model {where} has no local deployment"
            )
        return PrivacyBlocked(
            f"request held back for privacy ({why}): no local deployment of {where} can hold "
            f"about {self.needed:,} tokens (largest local window {self.largest:,})"
        )


def _weighted_order(deployments: list[Deployment], rand: Callable[[], float]) -> list[Deployment]:
    if len(deployments) < 2:
        return deployments
    # Efraimidis-Spirakis: a weighted random permutation in one pass.
    keyed = sorted(deployments, key=lambda d: rand() ** (1.0 / max(d.weight, 1e-9)))
    keyed.reverse()
    return keyed
