"""`routing_rules` and `privacy`: defaults, errors with key paths, warnings, compiled tiers."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sidecar.config import parse_config
from sidecar.config.model import (
    Deployment,
    LitellmSettings,
    ModelGroup,
    ProviderKind,
    SidecarConfig,
)
from sidecar.errors import ConfigError
from sidecar.routing import compile_routing
from sidecar.routing.rules import (
    DEFAULT_TIERS,
    SEED_ANALYSIS_WORDS,
    PrivacySettings,
    RoutingRules,
    Tier,
)
from sidecar.types import Locality

SEED_ALIASES = ("fast-local", "strong-local", "code-local", "cloud-strong", "cloud-fast")


def _config(
    aliases: tuple[str, ...] = SEED_ALIASES,
    *,
    routing_rules: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
    context_fallbacks: dict[str, tuple[str, ...]] | None = None,
) -> SidecarConfig:
    groups = {}
    for alias in aliases:
        locality = Locality.CLOUD if alias.startswith("cloud") else Locality.LOCAL
        d = Deployment(
            id=f"{alias}/0",
            model_group=alias,
            provider=ProviderKind.OLLAMA,
            upstream_model=alias,
            api_base="http://127.0.0.1:1",
            locality=locality,
        )
        groups[alias] = ModelGroup(alias, (d,))
    return SidecarConfig(
        groups=groups,
        litellm_settings=LitellmSettings(context_window_fallbacks=context_fallbacks or {}),
        routing_rules=routing_rules or {},
        privacy=privacy or {},
        source="test.yaml",
    )


def test_defaults_reproduce_the_seed() -> None:
    policy = compile_routing(_config())
    assert policy.rules == RoutingRules()
    auto = policy.rules.auto
    assert auto.alias == "auto"
    assert (auto.thresholds.cloud_tokens, auto.thresholds.strong_tokens) == (8000, 2000)
    assert auto.thresholds.multi_turn_messages == 4
    assert auto.analysis_words == SEED_ANALYSIS_WORDS
    assert dict(auto.tiers) == dict(DEFAULT_TIERS)
    assert policy.privacy == PrivacySettings()
    assert {t: target.alias for t, target in policy.tiers.items()} == dict(DEFAULT_TIERS)
    # A sensitive request's cloud tier stays local, on the strongest local alias.
    assert policy.local_tiers[Tier.CLOUD].alias == "strong-local"
    assert "has no local deployment" in policy.local_tiers[Tier.CLOUD].note
    assert policy.warnings == ()


def test_everything_configured() -> None:
    policy = compile_routing(
        _config(
            routing_rules={
                "tasks": {"classify": "fast-local", "chat": "smart"},
                "auto": {
                    "alias": "smart",
                    "thresholds": {"cloud_tokens": 100, "strong_tokens": 10},
                    "analysis_words": ["Summarize", "explain why"],
                    "code": {"fences": False, "keyword": False},
                    "tiers": {"cloud": "cloud-fast"},
                },
                "context": {"checks": False, "default_output_tokens": 1000},
            },
            privacy={
                "enabled": True,
                "engine": "python",
                "no_fallback_means_local": False,
                "detectors": {"passport": False},
                "terms": ["salary"],
                "patterns": {"emp": r"EMP-\d+"},
            },
        )
    )
    rules = policy.rules
    assert rules.tasks == {"classify": "fast-local", "chat": "smart"}
    assert rules.auto.alias == "smart" == policy.auto_alias
    assert rules.auto.thresholds.cloud_tokens == 100
    assert rules.auto.thresholds.multi_turn_messages == 4
    assert rules.auto.analysis_words == ("summarize", "explain why")
    assert (rules.auto.code.fences, rules.auto.code.syntax, rules.auto.code.keyword) == (
        False,
        True,
        False,
    )
    assert policy.tiers[Tier.CLOUD].alias == "cloud-fast"
    assert rules.context.checks is False
    assert rules.context.default_output_tokens == 1000
    privacy = policy.privacy
    assert "passport" not in privacy.detectors
    assert privacy.terms == {"terms": ("salary",)}
    assert privacy.patterns == {"pattern:emp": r"EMP-\d+"}
    assert privacy.no_fallback_means_local is False


BROKEN = [
    (
        {"routing_rules": {"tasks": {"classify": "nope"}}},
        "routing_rules.tasks.classify: unknown model 'nope' (known: auto, cloud-fast, ",
    ),
    (
        {"routing_rules": {"tasks": {"x": 3}}},
        "routing_rules.tasks.x: expected a model name, got int 3",
    ),
    ({"routing_rules": {"tasks": ["a"]}}, "routing_rules.tasks: expected a mapping, got a list"),
    (
        {"routing_rules": {"auto": {"thresholds": {"cloud_tokens": "lots"}}}},
        "routing_rules.auto.thresholds.cloud_tokens: expected an integer, got str 'lots'",
    ),
    (
        {"routing_rules": {"auto": {"thresholds": {"strong_tokens": True}}}},
        "routing_rules.auto.thresholds.strong_tokens: expected an integer, got bool True",
    ),
    (
        {"routing_rules": {"auto": {"thresholds": {"cloud_tokens": -1}}}},
        "routing_rules.auto.thresholds.cloud_tokens: must be >= 0, got -1",
    ),
    (
        {"routing_rules": {"auto": {"alias": "fast-local"}}},
        "routing_rules.auto.alias: 'fast-local' is also a model_name; choose another auto alias",
    ),
    (
        {"routing_rules": {"auto": {"tiers": {"code": "coder"}}}},
        "routing_rules.auto.tiers.code: unknown model 'coder' (known: ",
    ),
    (
        {"routing_rules": {"auto": {"analysis_words": "analyze"}}},
        "routing_rules.auto.analysis_words: expected a list of strings, got str 'analyze'",
    ),
    (
        {"routing_rules": {"auto": {"analysis_words": ["ok", ""]}}},
        "routing_rules.auto.analysis_words[1]: expected a non-empty string, got str ''",
    ),
    (
        {"routing_rules": {"auto": {"code": {"fences": "yes"}}}},
        "routing_rules.auto.code.fences: expected true or false, got str 'yes'",
    ),
    (
        {"routing_rules": {"context": {"default_output_tokens": 0}}},
        "routing_rules.context.default_output_tokens: must be >= 1, got 0",
    ),
    ({"privacy": {"enabled": "no"}}, "privacy.enabled: expected true or false, got str 'no'"),
    (
        {"privacy": {"engine": "re2"}},
        "privacy.engine: expected one of 'auto', 'python', 'hyperscan', got 're2'",
    ),
    (
        {"privacy": {"detectors": {"phone": True}}},
        "privacy.detectors.phone: unknown detector (known: ssn, card, passport, iban, medical, ",
    ),
    (
        {"privacy": {"detectors": {"ssn": "off"}}},
        "privacy.detectors.ssn: expected true or false, got str 'off'",
    ),
    (
        {"privacy": {"patterns": ["ok", "(unclosed"]}},
        "privacy.patterns[1]: invalid regular expression: missing ), unterminated subpattern",
    ),
    ({"privacy": {"patterns": "x"}}, "privacy.patterns: expected a list or a mapping of regexes"),
    ({"privacy": {"patterns": {"e": 5}}}, "privacy.patterns.e: expected a regex, got int 5"),
    ({"privacy": {"terms": [1]}}, "privacy.terms[0]: expected a non-empty string, got int 1"),
    (
        {"privacy": {"terms": {"medical": ["x"]}}},
        "privacy.terms.medical: a built-in detector's name; choose another list name",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BROKEN, ids=[m.split(":")[0] for _, m in BROKEN])
def test_broken_sections_name_their_key_path(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_routing(_config(**raw))
    assert caught.value.problems, caught.value
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith("test.yaml: ")


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_routing(
            _config(
                routing_rules={"tasks": {"a": "x", "b": "y"}},
                privacy={"engine": "nope", "enabled": 1},
            )
        )
    assert len(caught.value.problems) == 4


def test_unknown_keys_warn() -> None:
    policy = compile_routing(
        _config(
            routing_rules={"auto": {"thresholds": {"cloud_tokns": 9}}, "extra": 1},
            privacy={"detector": {"ssn": False}},
        )
    )
    assert policy.warnings == (
        "routing_rules: unknown key 'extra' ignored",
        "routing_rules.auto.thresholds: unknown key 'cloud_tokns' ignored",
        "privacy: unknown key 'detector' ignored",
    )


def test_missing_tier_aliases_fall_back_to_the_nearest() -> None:
    policy = compile_routing(_config(("fast-local", "strong-local", "cloud-strong")))
    code = policy.tiers[Tier.CODE]
    assert code.alias == "strong-local"
    assert code.note == "code-local is not configured: tier code uses strong-local"
    only_cloud = compile_routing(_config(("cloud-strong",)))
    assert {t: v.alias for t, v in only_cloud.tiers.items()} == dict.fromkeys(Tier, "cloud-strong")
    assert only_cloud.local_tiers == {}


def test_no_tier_alias_at_all_warns() -> None:
    policy = compile_routing(_config(("gpt",)))
    assert policy.tiers == {}
    assert policy.warnings == (
        "routing_rules.auto: no tier alias is configured, so model 'auto' cannot be used",
    )


def test_context_chains_follow_fallbacks_transitively() -> None:
    policy = compile_routing(
        _config(
            context_fallbacks={
                "fast-local": ("strong-local",),
                "strong-local": ("cloud-strong", "fast-local"),
                "cloud-strong": ("cloud-fast",),
            }
        )
    )
    chains = policy.context_chains
    assert chains["fast-local"] == ("strong-local", "cloud-strong", "cloud-fast")
    assert chains["strong-local"] == ("cloud-strong", "fast-local", "cloud-fast")
    assert chains["code-local"] == ()


def test_a_parsed_config_compiles() -> None:
    raw = yaml.safe_load(
        "model_list:\n"
        "  - model_name: fast-local\n"
        "    litellm_params: {model: ollama/llama3.2:8b, api_base: 'http://ollama:11434'}\n"
        "  - model_name: cloud-strong\n"
        "    litellm_params: {model: gpt-4o, api_key: sk-x}\n"
        "litellm_settings:\n"
        "  context_window_fallbacks:\n"
        "    - fast-local: [cloud-strong]\n"
        "routing_rules:\n"
        "  tasks: {classify: fast-local}\n"
        "privacy:\n"
        "  terms: [salary]\n"
    )
    policy = compile_routing(parse_config(raw, source="inline", env={}))
    assert policy.rules.tasks == {"classify": "fast-local"}
    assert policy.context_chains["fast-local"] == ("cloud-strong",)
    assert policy.privacy.terms == {"terms": ("salary",)}
