"""The `routing_rules` and `privacy` sections, validated once into frozen settings.

    routing_rules:
      tasks: {}                  # request metadata `task` -> alias, used with the auto
                                 # alias, e.g. {classify: fast-local, code: code-local}
      auto:
        alias: auto              # the model name that asks for complexity routing
        thresholds:
          cloud_tokens: 8000     # more estimated prompt tokens -> cloud tier
          strong_tokens: 2000    # more -> strong tier
          multi_turn_messages: 4 # more messages, with analysis words and code -> cloud tier
        analysis_words: [analyze, compare, evaluate, explain why]
        code:                    # what counts as code
          fences: true           # a ``` fence
          syntax: true           # code-like lines: def f(, function, =>, `;` line ends, ...
          keyword: true          # the word "code" (the seed's hint)
        tiers: {cloud: cloud-strong, code: code-local, strong: strong-local, fast: fast-local}
                                 # a default tier alias that is not configured: the nearest
                                 # one stands in (cloud -> strong -> code -> fast, ...)
      context:
        checks: true             # skip deployments whose window cannot hold the request
        default_output_tokens: 256  # output room kept when the request sets no max_tokens

    privacy:
      enabled: true              # the content detector; caller hints apply regardless
      engine: auto               # auto (hyperscan when installed) | python | hyperscan
      no_fallback_means_local: true
      detectors: {ssn: true, card: true, passport: true, iban: true,
                  medical: true, confidential: true}
      terms: []                  # more terms; a list fires as "terms", or give named
                                 # lists: {hr: [salary, payroll]} fires as "hr"
      patterns: []               # regexes (Python syntax); a list fires as "pattern:<index>",
                                 # or {employee: 'EMP-[0-9]{5}'} fires as "pattern:employee"

The values shown are the defaults; the auto defaults reproduce the seed article's
`estimate_complexity`. Unknown keys are warnings; wrong values are errors that
name their key path.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sidecar.config.reader import Findings, Section, describe
from sidecar.routing.privacy import DETECTORS, ENGINES

_T = TypeVar("_T")


class Tier(enum.StrEnum):
    FAST = "fast"
    STRONG = "strong"
    CODE = "code"
    CLOUD = "cloud"


DEFAULT_TIERS: Mapping[Tier, str] = {
    Tier.CLOUD: "cloud-strong",
    Tier.CODE: "code-local",
    Tier.STRONG: "strong-local",
    Tier.FAST: "fast-local",
}
SEED_ANALYSIS_WORDS = ("analyze", "compare", "evaluate", "explain why")


@dataclass(frozen=True, slots=True)
class Thresholds:
    cloud_tokens: int = 8000
    strong_tokens: int = 2000
    multi_turn_messages: int = 4


@dataclass(frozen=True, slots=True)
class CodeSignals:
    fences: bool = True
    syntax: bool = True
    keyword: bool = True


@dataclass(frozen=True, slots=True)
class AutoRules:
    alias: str = "auto"
    thresholds: Thresholds = Thresholds()
    analysis_words: tuple[str, ...] = SEED_ANALYSIS_WORDS
    code: CodeSignals = CodeSignals()
    # Tiers named in the YAML must name a configured alias; a default one may be
    # missing, and then the nearest configured tier stands in (policy.NEAREST_TIERS).
    tiers: Mapping[Tier, str] = field(default_factory=lambda: dict(DEFAULT_TIERS))


@dataclass(frozen=True, slots=True)
class ContextRules:
    checks: bool = True
    default_output_tokens: int = 256


@dataclass(frozen=True, slots=True)
class RoutingRules:
    tasks: Mapping[str, str] = field(default_factory=dict)
    auto: AutoRules = AutoRules()
    context: ContextRules = ContextRules()


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    enabled: bool = True
    engine: str = "auto"
    no_fallback_means_local: bool = True
    detectors: frozenset[str] = frozenset(DETECTORS)
    terms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    patterns: Mapping[str, str] = field(default_factory=dict)


def parse_routing_rules(
    raw: Mapping[str, Any], aliases: frozenset[str], findings: Findings
) -> RoutingRules:
    top = Section(raw, "routing_rules", findings)
    top.check_keys(frozenset({"tasks", "auto", "context"}))
    auto = _auto_rules(top.section("auto"), aliases)
    known = aliases | {auto.alias}
    tasks: dict[str, str] = {}
    task_section = top.section("tasks")
    for task, alias in task_section.data.items():
        if not isinstance(alias, str):
            task_section.error(str(task), f"expected a model name, got {describe(alias)}")
        elif alias not in known:
            task_section.error(str(task), f"unknown model {alias!r} (known: {_listed(known)})")
        else:
            tasks[str(task)] = alias
    context = top.section("context")
    context.check_keys(frozenset({"checks", "default_output_tokens"}))
    return RoutingRules(
        tasks=tasks,
        auto=auto,
        context=ContextRules(
            checks=_or(context.boolean("checks"), True),
            default_output_tokens=_or(context.integer("default_output_tokens", ge=1), 256),
        ),
    )


def _auto_rules(section: Section, aliases: frozenset[str]) -> AutoRules:
    section.check_keys(frozenset({"alias", "thresholds", "analysis_words", "code", "tiers"}))
    alias = _or(_non_empty(section, "alias"), "auto")
    if alias in aliases:
        section.error("alias", f"{alias!r} is also a model_name; choose another auto alias")
    limits = section.section("thresholds")
    limits.check_keys(frozenset({"cloud_tokens", "strong_tokens", "multi_turn_messages"}))
    code = section.section("code")
    code.check_keys(frozenset({"fences", "syntax", "keyword"}))
    tiers = dict(DEFAULT_TIERS)
    tier_section = section.section("tiers")
    tier_section.check_keys(frozenset(t.value for t in Tier))
    for tier in Tier:
        target = _non_empty(tier_section, tier.value)
        if target is not None and target not in aliases:
            tier_section.error(tier.value, f"unknown model {target!r} (known: {_listed(aliases)})")
        elif target is not None:
            tiers[tier] = target
    words = _or(section.string_list("analysis_words"), SEED_ANALYSIS_WORDS)
    return AutoRules(
        alias=alias,
        thresholds=Thresholds(
            cloud_tokens=_or(limits.integer("cloud_tokens", ge=0), 8000),
            strong_tokens=_or(limits.integer("strong_tokens", ge=0), 2000),
            multi_turn_messages=_or(limits.integer("multi_turn_messages", ge=0), 4),
        ),
        analysis_words=tuple(w.lower() for w in words),
        code=CodeSignals(
            fences=_or(code.boolean("fences"), True),
            syntax=_or(code.boolean("syntax"), True),
            keyword=_or(code.boolean("keyword"), True),
        ),
        tiers=tiers,
    )


def parse_privacy(raw: Mapping[str, Any], findings: Findings) -> PrivacySettings:
    top = Section(raw, "privacy", findings)
    top.check_keys(
        frozenset(
            {"enabled", "engine", "no_fallback_means_local", "detectors", "terms", "patterns"}
        )
    )
    engine = _or(top.choice("engine", ENGINES), "auto")
    detectors = set(DETECTORS)
    switches = top.section("detectors")
    for name in switches.data:
        if name not in DETECTORS:
            switches.error(str(name), f"unknown detector (known: {', '.join(DETECTORS)})")
        elif switches.boolean(name) is False:
            detectors.discard(name)
    return PrivacySettings(
        enabled=_or(top.boolean("enabled"), True),
        engine=engine,
        no_fallback_means_local=_or(top.boolean("no_fallback_means_local"), True),
        detectors=frozenset(detectors),
        terms=_named_lists(top, "terms"),
        patterns=_named_patterns(top),
    )


def _named_lists(top: Section, key: str) -> dict[str, tuple[str, ...]]:
    value = top.data.get(key)
    if value is None:
        return {}
    if isinstance(value, list):
        terms = top.string_list(key)
        return {key: terms} if terms else {}
    lists: dict[str, tuple[str, ...]] = {}
    section = top.section(key)
    for name in section.data:
        if str(name) in DETECTORS:
            section.error(str(name), "a built-in detector's name; choose another list name")
            continue
        terms = section.string_list(str(name))
        if terms:
            lists[str(name)] = terms
    return lists


def _named_patterns(top: Section) -> dict[str, str]:
    value = top.data.get("patterns")
    named: list[tuple[str, object]]
    if value is None:
        return {}
    if isinstance(value, list):
        named = [(str(i), p) for i, p in enumerate(value)]
        where = [f"privacy.patterns[{i}]" for i in range(len(value))]
    elif isinstance(value, Mapping):
        named = [(str(k), p) for k, p in value.items()]
        where = [f"privacy.patterns.{k}" for k, _ in named]
    else:
        top.error("patterns", f"expected a list or a mapping of regexes, got {describe(value)}")
        return {}
    patterns: dict[str, str] = {}
    for (name, pattern), path in zip(named, where, strict=True):
        if not isinstance(pattern, str) or not pattern:
            top.findings.error(path, f"expected a regex, got {describe(pattern)}")
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            top.findings.error(path, f"invalid regular expression: {exc}")
            continue
        patterns[f"pattern:{name}"] = pattern
    return patterns


def _non_empty(section: Section, key: str) -> str | None:
    value = section.string(key)
    if value is not None and not value:
        section.error(key, "expected a non-empty string, got str ''")
        return None
    return value


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _listed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "(none configured)"
