"""Everything routing needs from the configuration, compiled once at start-up.

`compile_routing(config)` validates `routing_rules` and `privacy`, compiles the
detector and the complexity scorer, resolves each auto tier to a configured
alias, and lays out the context-window fallback chains. `plan()` only reads the
result, so no request pays for parsing or compiling anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.config.model import SidecarConfig
from sidecar.config.reader import Findings
from sidecar.errors import ConfigError
from sidecar.routing.complexity import ComplexityScorer
from sidecar.routing.privacy import (
    BUILTIN_TERMS,
    CandidateScan,
    Detector,
    PythonScan,
    TermRule,
    identifier_rules,
    shape_safe,
    term_rule,
    text_terms_pattern,
)
from sidecar.routing.privacy_hyperscan import HyperscanScan, load_hyperscan
from sidecar.routing.rules import (
    PrivacySettings,
    RoutingRules,
    Tier,
    parse_privacy,
    parse_routing_rules,
)
from sidecar.types import Locality

# Where a tier turns when its alias is not configured: the closest in strength,
# staying local before going to the cloud.
NEAREST_TIERS: Mapping[Tier, tuple[Tier, ...]] = {
    Tier.FAST: (Tier.STRONG, Tier.CODE, Tier.CLOUD),
    Tier.STRONG: (Tier.CODE, Tier.FAST, Tier.CLOUD),
    Tier.CODE: (Tier.STRONG, Tier.CLOUD, Tier.FAST),
    Tier.CLOUD: (Tier.STRONG, Tier.CODE, Tier.FAST),
}


@dataclass(frozen=True, slots=True)
class TierTarget:
    """The alias a tier routes to, and a note when it is a stand-in."""

    alias: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    config: SidecarConfig
    rules: RoutingRules
    privacy: PrivacySettings
    # None when `privacy.enabled` is false: caller hints still apply.
    detector: Detector | None
    scorer: ComplexityScorer
    # Per tier, for any request and for a sensitive one (local deployments only);
    # a tier is absent when no configured alias can serve it.
    tiers: Mapping[Tier, TierTarget]
    local_tiers: Mapping[Tier, TierTarget]
    # Per alias, the aliases to try in order when none of its deployments can
    # hold the request (`context_window_fallbacks`, followed transitively).
    context_chains: Mapping[str, tuple[str, ...]]
    warnings: tuple[str, ...] = ()

    @property
    def auto_alias(self) -> str:
        return self.rules.auto.alias


def compile_routing(config: SidecarConfig, previous: RoutingPolicy | None = None) -> RoutingPolicy:
    """Validate and compile the routing sections of `config`; raise ConfigError.

    A reload passes the `previous` policy: its privacy detector is kept when the privacy
    settings did not change, as compiling one holds the interpreter for tens of ms."""
    findings = Findings()
    aliases = frozenset(config.groups)
    rules = parse_routing_rules(config.routing_rules, aliases, findings)
    privacy = parse_privacy(config.privacy, findings)
    if privacy.engine == "hyperscan" and load_hyperscan() is None:
        findings.error("privacy.engine", "'hyperscan' is not installed (pip install hyperscan)")
    if findings.errors:
        raise ConfigError(findings.errors, config.source)
    local = frozenset(
        name
        for name, group in config.groups.items()
        if any(d.locality is Locality.LOCAL for d in group.deployments)
    )
    tiers = _resolve_tiers(rules, aliases, "is not configured")
    local_tiers = _resolve_tiers(rules, local, "has no local deployment")
    warnings = list(findings.warnings)
    if not tiers:
        warnings.append(
            f"routing_rules.auto: no tier alias is configured, so model {rules.auto.alias!r} "
            "cannot be used"
        )
    return RoutingPolicy(
        config=config,
        rules=rules,
        privacy=privacy,
        detector=(
            previous.detector
            if previous is not None and previous.privacy == privacy
            else compile_detector(privacy)
            if privacy.enabled
            else None
        ),
        scorer=ComplexityScorer(rules.auto),
        tiers=tiers,
        local_tiers=local_tiers,
        context_chains=_context_chains(config),
        warnings=tuple(warnings),
    )


def compile_detector(settings: PrivacySettings) -> Detector:
    on = settings.detectors
    identifiers = [rule for name, rule in identifier_rules().items() if name in on]
    term_lists = {name: terms for name, terms in BUILTIN_TERMS.items() if name in on}
    term_lists.update(settings.terms)
    shape_terms: list[TermRule] = []
    text_terms: dict[str, re.Pattern[str]] = {}
    for name, terms in term_lists.items():
        shape_terms.extend(term_rule(name, t) for t in terms if shape_safe(t))
        others = [t for t in terms if not shape_safe(t)]
        if others:
            text_terms[name] = text_terms_pattern(others)
    scan: CandidateScan | None = None
    if identifiers or shape_terms:
        hs = load_hyperscan() if settings.engine != "python" else None
        if hs is not None:
            scan = HyperscanScan(hs, identifiers, shape_terms)
        else:
            scan = PythonScan(identifiers, shape_terms)
    patterns = {name: re.compile(p) for name, p in settings.patterns.items()}
    return Detector(scan, text_terms, patterns)


def detect_sensitive(text: str, settings: PrivacySettings | None = None) -> tuple[str, ...]:
    """Names of the detectors that fire on `text` (compiles the detector each call)."""
    return compile_detector(settings or PrivacySettings()).detect(text)


def _resolve_tiers(
    rules: RoutingRules, usable: frozenset[str], why_not: str
) -> dict[Tier, TierTarget]:
    wanted = rules.auto.tiers
    resolved: dict[Tier, TierTarget] = {}
    for tier in Tier:
        if wanted[tier] in usable:
            resolved[tier] = TierTarget(wanted[tier])
            continue
        for other in NEAREST_TIERS[tier]:
            if wanted[other] in usable:
                note = f"{wanted[tier]} {why_not}: tier {tier} uses {wanted[other]}"
                resolved[tier] = TierTarget(wanted[other], note)
                break
    return resolved


def _context_chains(config: SidecarConfig) -> dict[str, tuple[str, ...]]:
    fallbacks = config.litellm_settings.context_window_fallbacks
    chains: dict[str, tuple[str, ...]] = {}
    for alias in config.groups:
        order: list[str] = []
        queue = list(fallbacks.get(alias, ()))
        while queue:
            nxt = queue.pop(0)
            if nxt == alias or nxt in order or nxt not in config.groups:
                continue
            order.append(nxt)
            queue.extend(fallbacks.get(nxt, ()))
        chains[alias] = tuple(order)
    return chains
