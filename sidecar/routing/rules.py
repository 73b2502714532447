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
        default_output_tokens: 256  # output room when neither request nor model caps it

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
from typing import Any

from sidecar.routing.privacy import DETECTORS, ENGINES


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


@dataclass(slots=True)
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_routing_rules(
    raw: Mapping[str, Any], aliases: frozenset[str], findings: Findings
) -> RoutingRules:
    top = _Reader(raw, "routing_rules", findings)
    top.check_keys({"tasks", "auto", "context"})
    auto = _auto_rules(top.section("auto"), aliases)
    known = aliases | {auto.alias}
    tasks: dict[str, str] = {}
    for task, alias in top.section("tasks").items():
        path = f"routing_rules.tasks.{task}"
        if not isinstance(alias, str):
            findings.errors.append(f"{path}: expected a model name, got {_describe(alias)}")
        elif alias not in known:
            findings.errors.append(f"{path}: unknown model {alias!r} (known: {_listed(known)})")
        else:
            tasks[task] = alias
    context = top.section("context")
    context.check_keys({"checks", "default_output_tokens"})
    return RoutingRules(
        tasks=tasks,
        auto=auto,
        context=ContextRules(
            checks=context.boolean("checks", True),
            default_output_tokens=context.integer("default_output_tokens", 256, minimum=1),
        ),
    )


def _auto_rules(section: _Reader, aliases: frozenset[str]) -> AutoRules:
    section.check_keys({"alias", "thresholds", "analysis_words", "code", "tiers"})
    alias = section.string("alias", "auto")
    if alias in aliases:
        section.error("alias", f"{alias!r} is also a model_name; choose another auto alias")
    limits = section.section("thresholds")
    limits.check_keys({"cloud_tokens", "strong_tokens", "multi_turn_messages"})
    code = section.section("code")
    code.check_keys({"fences", "syntax", "keyword"})
    tiers = dict(DEFAULT_TIERS)
    tier_section = section.section("tiers")
    tier_section.check_keys({t.value for t in Tier})
    for tier in Tier:
        if tier.value not in tier_section.data:
            continue
        target = tier_section.string(tier.value, "")
        if target and target not in aliases:
            tier_section.error(tier.value, f"unknown model {target!r} (known: {_listed(aliases)})")
        elif target:
            tiers[tier] = target
    words = section.string_list("analysis_words", SEED_ANALYSIS_WORDS)
    return AutoRules(
        alias=alias,
        thresholds=Thresholds(
            cloud_tokens=limits.integer("cloud_tokens", 8000, minimum=0),
            strong_tokens=limits.integer("strong_tokens", 2000, minimum=0),
            multi_turn_messages=limits.integer("multi_turn_messages", 4, minimum=0),
        ),
        analysis_words=tuple(w.lower() for w in words),
        code=CodeSignals(
            fences=code.boolean("fences", True),
            syntax=code.boolean("syntax", True),
            keyword=code.boolean("keyword", True),
        ),
        tiers=tiers,
    )


def parse_privacy(raw: Mapping[str, Any], findings: Findings) -> PrivacySettings:
    top = _Reader(raw, "privacy", findings)
    top.check_keys(
        {"enabled", "engine", "no_fallback_means_local", "detectors", "terms", "patterns"}
    )
    engine = top.string("engine", "auto")
    if engine not in ENGINES:
        top.error("engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}")
        engine = "auto"
    detectors = set(DETECTORS)
    switches = top.section("detectors")
    for name in switches.data:
        if name not in DETECTORS:
            switches.error(str(name), f"unknown detector (known: {', '.join(DETECTORS)})")
        elif not switches.boolean(name, True):
            detectors.discard(name)
    return PrivacySettings(
        enabled=top.boolean("enabled", True),
        engine=engine,
        no_fallback_means_local=top.boolean("no_fallback_means_local", True),
        detectors=frozenset(detectors),
        terms=_named_lists(top, "terms"),
        patterns=_named_patterns(top),
    )


def _named_lists(top: _Reader, key: str) -> dict[str, tuple[str, ...]]:
    value = top.data.get(key)
    if value is None:
        return {}
    if isinstance(value, list):
        terms = top.string_list(key, ())
        return {key: terms} if terms else {}
    lists: dict[str, tuple[str, ...]] = {}
    section = top.section(key)
    for name in section.data:
        if str(name) in DETECTORS:
            section.error(str(name), "a built-in detector's name; choose another list name")
            continue
        terms = section.string_list(str(name), ())
        if terms:
            lists[str(name)] = terms
    return lists


def _named_patterns(top: _Reader) -> dict[str, str]:
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
        top.error("patterns", f"expected a list or a mapping of regexes, got {_describe(value)}")
        return {}
    patterns: dict[str, str] = {}
    for (name, pattern), path in zip(named, where, strict=True):
        if not isinstance(pattern, str) or not pattern:
            top.findings.errors.append(f"{path}: expected a regex, got {_describe(pattern)}")
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            top.findings.errors.append(f"{path}: invalid regular expression: {exc}")
            continue
        patterns[f"pattern:{name}"] = pattern
    return patterns


class _Reader:
    """A mapping under a key path; getters record problems and return the default."""

    def __init__(self, data: object, path: str, findings: Findings) -> None:
        self.path = path
        self.findings = findings
        if isinstance(data, Mapping):
            self.data: Mapping[Any, Any] = data
        else:
            self.data = {}
            if data is not None:
                findings.errors.append(f"{path}: expected a mapping, got {_describe(data)}")

    def error(self, key: str, problem: str) -> None:
        self.findings.errors.append(f"{self.path}.{key}: {problem}")

    def check_keys(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                self.findings.warnings.append(f"{self.path}: unknown key {key!r} ignored")

    def items(self) -> list[tuple[str, object]]:
        return [(str(k), v) for k, v in self.data.items()]

    def section(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), f"{self.path}.{key}", self.findings)

    def string(self, key: str, default: str) -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.error(key, f"expected a non-empty string, got {_describe(value)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {_describe(value)}")
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {_describe(value)}")
            return default
        if value < minimum:
            self.error(key, f"must be >= {minimum}, got {value}")
            return default
        return value

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, list):
            self.error(key, f"expected a list of strings, got {_describe(value)}")
            return default
        items: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item.strip():
                items.append(item.strip())
            else:
                self.error(f"{key}[{index}]", f"expected a non-empty string, got {_describe(item)}")
        return tuple(items)


def _listed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "(none configured)"


def _describe(value: object) -> str:
    """A value's YAML type, and the value when it is short, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
