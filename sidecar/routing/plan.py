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
4. Budgets: a cloud deployment whose worst-case cost no longer fits a spend cap
   it counts toward (the budget view says) is left out. When that empties the
   group, its failure fallbacks still apply, and an auto-routed request takes
   the nearest tier with a local deployment; with nothing left the call fails
   with BudgetExceeded naming the cap.
5. Resilience: the group again for each retry (`num_retries`), then its
   failure fallbacks (the group's retry policy, else `fallbacks`, else
   `default_fallbacks`), filtered by the same privacy, context and budget rules,
   and none with `no_fallback`. Deployments the health view reports down go
   last, or are left out with `enable_pre_call_checks`.
6. Capabilities (capabilities.py): a request with tools skips deployments that cannot
   call tools (a 400 when no fallback can take it either), and a request carrying
   signed thinking keeps to the provider family of its first candidate.
7. Never fail without trying: when fewer than `health.panic_threshold` of the
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
from sidecar.errors import (
    BudgetExceeded,
    ContextWindowExceeded,
    InvalidRequest,
    PrivacyBlocked,
    UnknownModel,
)
from sidecar.routing.capabilities import (
    can_call_tools,
    carries_signed_thinking,
    family,
    wants_tools,
)
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


class BudgetView(Protocol):
    """What the spend caps leave, as of one moment; reading it does no I/O."""

    def exceeded(self, deployment: Deployment, request: ChatRequest) -> BudgetExceeded | None:
        """The cap that cannot take this request's worst case on `deployment`, if any."""
        ...


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
    budgets: BudgetView | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> RoutePlan:
    """Plan the deployments for `request`.

    `policy` is `compile_routing(config)`, built once at start-up; without it the
    configuration is compiled on every call, which is only fit for one-off use.
    Raises UnknownModel, PrivacyBlocked, ContextWindowExceeded or BudgetExceeded.
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
    scope = _Scope(request, policy, tokens, reasons, no_fallback, health, budgets, rand)
    candidates, held = _candidates(alias, reason, scope, notes)
    if (
        not candidates
        and held.budget is not None
        and (request.model or policy.auto_alias) == (policy.auto_alias)
    ):
        local = _local_tier(request, policy, text, tokens)
        if local is not None and local[0] != alias:
            notes.append(f"budget: auto routing falls back to the local tier {local[0]}")
            alias = local[0]
            candidates, _ = _candidates(alias, local[1], scope, notes)
    if not candidates and held.budget is not None:
        raise held.budget
    if not candidates and held.tools:
        raise InvalidRequest(
            "tools",
            f"model {alias!r} cannot call tools (model_info.supports_function_calling is "
            "false for its deployments) and no fallback that can was left",
        )
    if candidates and carries_signed_thinking(request):
        candidates = _same_family(candidates, notes)
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


def _same_family(candidates: list[Candidate], notes: list[str]) -> list[Candidate]:
    """The candidates of the first one's provider family (signed thinking needs it)."""
    kind = family(candidates[0].deployment)
    kept = [c for c in candidates if family(c.deployment) is kind]
    if len(kept) < len(candidates):
        left = ", ".join(dict.fromkeys(c.deployment.id for c in candidates if c not in kept))
        notes.append(f"signed thinking: kept to {kind.value} deployments, left out {left}")
    return kept


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


@dataclass(frozen=True, slots=True)
class _Scope:
    """What every group of one plan is filtered and ordered by."""

    request: ChatRequest
    policy: RoutingPolicy
    tokens: int
    reasons: tuple[str, ...]
    no_fallback: bool
    health: HealthView | None
    budgets: BudgetView | None
    rand: Callable[[], float]


def _candidates(
    alias: str, reason: str, scope: _Scope, notes: list[str]
) -> tuple[list[Candidate], _Held]:
    """The group's deployments, its retries, then its failure fallbacks; and why some were
    held back."""
    policy = scope.policy
    held = _Held()
    group, chosen, reason = _deployments(alias, reason, scope, notes, held)
    strategy = policy.config.router_settings.routing_strategy
    candidates = [Candidate(d, reason) for d in _order(chosen, strategy, scope.health, scope.rand)]
    retry = policy.config.router_settings.model_group_retry_policy.get(group)
    retries = retry.num_retries if retry else policy.config.litellm_settings.num_retries
    first = list(candidates)
    for n in range(1, retries + 1):
        candidates += [Candidate(c.deployment, f"{c.reason}; retry {n}") for c in first]
    if not scope.no_fallback:
        for fallback in _fallbacks(policy.config, group):
            others = _Held()
            kept = _fitting(fallback, scope, notes, others)
            held.budget = held.budget or others.budget
            ordered = _order(kept, strategy, scope.health, scope.rand)
            candidates += [Candidate(d, f"fallback {group} -> {fallback}") for d in ordered]
    return candidates, held


def _local_tier(
    request: ChatRequest, policy: RoutingPolicy, text: str, tokens: int
) -> tuple[str, str] | None:
    """The auto tier nearest the request's with a local deployment, as (alias, reason)."""
    verdict = policy.scorer.score(text, tokens, len(request.messages))
    chosen = policy.local_tiers.get(verdict.tier)
    if chosen is None:
        return None
    return chosen.alias, f"auto: {verdict.why} -> {chosen.alias} (cloud over budget)"


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
    alias: str, reason: str, scope: _Scope, notes: list[str], held: _Held
) -> tuple[str, list[Deployment], str]:
    """The first group of the context chain with deployments left, its name and reason;
    none when caps held them all back (the failure fallbacks may still serve)."""
    policy = scope.policy
    chain = (alias,) if scope.no_fallback else (alias, *policy.context_chains.get(alias, ()))
    for name in chain:
        kept = _fitting(name, scope, notes, held)
        if kept:
            if name == alias:
                return name, kept, reason
            notes.append(f"context fallback: {alias} -> {name}")
            return name, kept, f"{reason}; context fallback -> {name}"
    if held.budget is not None or held.tools:
        # The failure fallbacks may still take it.
        return alias, [], reason
    raise held.error(alias, chain, scope.reasons)


def _fitting(group: str, scope: _Scope, notes: list[str], held: _Held) -> list[Deployment]:
    """The group's deployments that may take the request: local when sensitive, with a
    context window that holds the prompt and the output room, and within their caps."""
    policy, request, tokens, reasons = scope.policy, scope.request, scope.tokens, scope.reasons
    budgets = scope.budgets
    checks = policy.rules.context.checks
    requested = request.params.max_tokens
    default_output = policy.rules.context.default_output_tokens
    kept: list[Deployment] = []
    tools = wants_tools(request)
    for d in policy.config.groups[group].deployments:
        if reasons and d.locality is not Locality.LOCAL:
            held.privacy += 1
            continue
        if tools and not can_call_tools(d):
            notes.append(f"tools: skipped {d.id} (it cannot call tools)")
            held.tools += 1
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
        if budgets is not None and d.locality is not Locality.LOCAL:
            over = budgets.exceeded(d, request)
            if over is not None:
                notes.append(
                    f"budget: left out {d.id} ({over.budget}: ${over.spent:.4f} of "
                    f"${over.cap:.4f} spent or held)"
                )
                held.budget = held.budget or over
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
    budget: BudgetExceeded | None = None  # the first cap that held a deployment back
    tools: int = 0  # deployments that cannot call the request's tools

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
