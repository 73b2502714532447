"""The config loader: the seed files, key-path errors, warnings, locality, the table."""

from __future__ import annotations

import logging
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import ProviderKind, SidecarConfig, Timeouts, load_config, parse_config
from sidecar.config.providers import SUPPORTED_MODELS, is_local_host, resolve_model
from sidecar.config.table import render_model_table
from sidecar.config.windows import ContextWindows, load_context_windows
from sidecar.errors import ConfigError
from sidecar.types import Locality

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEED = EXAMPLES / "litellm_config.yaml"
SEED_FULL = EXAMPLES / "litellm_config.full.yaml"
KEYS = {"OPENAI_API_KEY": "sk-openai-secret-1", "ANTHROPIC_API_KEY": "sk-ant-secret-2"}


def _parse(text: str, env: dict[str, str] | None = None) -> SidecarConfig:
    return parse_config(yaml.safe_load(textwrap.dedent(text)), env=env or {})


def _problems(text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    return info.value.problems


def _one_model(**params: Any) -> dict[str, Any]:
    return {"model_list": [{"model_name": "m", "litellm_params": params}]}


# --- the seed files ---------------------------------------------------------------


@pytest.mark.parametrize("path", [SEED, SEED_FULL], ids=["seed", "seed-full"])
def test_seed_files_load(path: Path) -> None:
    config = load_config(path, env=KEYS)

    assert list(config.groups) == [
        "fast-local",
        "strong-local",
        "code-local",
        "cloud-strong",
        "cloud-fast",
        "cloud-reasoning",
    ]
    by_alias = {d.model_group: d for d in config.deployments}
    fast = by_alias["fast-local"]
    assert fast.id == "fast-local/0"
    assert fast.provider is ProviderKind.OLLAMA
    assert fast.upstream_model == "llama3.2:8b"
    assert fast.api_base == "http://ollama:11434"
    assert fast.locality is Locality.LOCAL
    assert fast.max_output_tokens == 4096
    assert fast.context_window is None  # discovered from Ollama later
    assert config.groups["fast-local"].description == "Fast local model for simple tasks"
    assert by_alias["code-local"].upstream_model == "qwen2.5-coder:32b-instruct-q4_K_M"

    strong = by_alias["cloud-strong"]
    assert strong.provider is ProviderKind.OPENAI
    assert strong.upstream_model == "gpt-4o"
    assert strong.api_base == "https://api.openai.com/v1"
    assert strong.locality is Locality.CLOUD
    assert strong.context_window == 128_000
    assert strong.api_key == "sk-openai-secret-1"
    assert by_alias["cloud-fast"].context_window == 128_000
    reasoning = by_alias["cloud-reasoning"]
    assert reasoning.provider is ProviderKind.ANTHROPIC
    assert reasoning.api_base == "https://api.anthropic.com"
    assert reasoning.context_window == 200_000
    assert reasoning.api_key == "sk-ant-secret-2"

    assert config.litellm_settings.request_timeout == 120
    assert config.timeouts.total == 120
    assert strong.timeouts.total == 120
    assert config.litellm_settings.default_fallbacks == ("cloud-fast",)
    assert config.general_settings.master_key == "sk-your-proxy-master-key"
    assert config.general_settings.max_budget == 200
    assert config.general_settings.budget_duration == "30d"
    assert config.warnings == ()
    assert config.source == str(path)


def test_seed_fallbacks_and_router_settings() -> None:
    seed = load_config(SEED, env=KEYS)
    assert dict(seed.litellm_settings.context_window_fallbacks) == {
        "strong-local": ("cloud-strong",),
        "fast-local": ("cloud-fast",),
    }
    assert seed.router_settings.routing_strategy == "simple-shuffle"

    full = load_config(SEED_FULL, env=KEYS)
    assert dict(full.litellm_settings.context_window_fallbacks) == {
        "fast-local": ("strong-local",),
        "strong-local": ("cloud-strong",),
    }
    router = full.router_settings
    assert router.routing_strategy == "latency-based-routing"
    assert router.enable_pre_call_checks is True
    fast_policy = router.model_group_retry_policy["fast-local"]
    assert fast_policy.timeout_seconds == 5
    assert fast_policy.num_retries == 1
    assert fast_policy.fallbacks == ("cloud-fast",)
    assert router.model_group_retry_policy["strong-local"].fallbacks == ("cloud-strong",)
    by_alias = {d.model_group: d for d in full.deployments}
    assert by_alias["cloud-strong"].max_budget == 150
    assert by_alias["cloud-strong"].budget_duration == "30d"
    assert by_alias["cloud-reasoning"].max_budget == 50


# --- secrets ----------------------------------------------------------------------


def test_environment_secrets_resolve_from_the_given_env() -> None:
    config = _parse(
        """
        model_list:
          - model_name: cloud
            litellm_params: {model: gpt-4o, api_key: os.environ/MY_KEY}
        general_settings:
          master_key: os.environ/MASTER
          database_url: os.environ/DB_URL
        """,
        env={"MY_KEY": "k-123", "MASTER": "m-456", "DB_URL": "postgresql://u:p@h/db"},
    )
    assert config.groups["cloud"].deployments[0].api_key == "k-123"
    assert config.general_settings.master_key == "m-456"
    assert config.general_settings.database_url == "postgresql://u:p@h/db"
    assert config.warnings == ()


def test_unset_environment_secret_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sidecar.config"):
        config = load_config(SEED, env={})
    assert config.deployments[3].api_key is None
    assert config.warnings == (
        "model_list[3].litellm_params.api_key: environment variable OPENAI_API_KEY is not set",
        "model_list[4].litellm_params.api_key: environment variable OPENAI_API_KEY is not set",
        "model_list[5].litellm_params.api_key: environment variable ANTHROPIC_API_KEY is not set",
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "sidecar.config"]
    assert logged == [f"{SEED}: {warning}" for warning in config.warnings]


def test_literal_secret_is_kept_and_empty_variable_counts_as_unset() -> None:
    config = _parse(
        """
        model_list:
          - model_name: a
            litellm_params: {model: gpt-4o, api_key: sk-literal}
          - model_name: b
            litellm_params: {model: gpt-4o, api_key: os.environ/EMPTY}
        """,
        env={"EMPTY": ""},
    )
    assert config.groups["a"].deployments[0].api_key == "sk-literal"
    assert config.groups["b"].deployments[0].api_key is None
    assert config.warnings == (
        "model_list[1].litellm_params.api_key: environment variable EMPTY is not set",
    )


def test_api_base_from_the_environment() -> None:
    text = """
        model_list:
          - model_name: a
            litellm_params: {model: openai/x, api_base: os.environ/VLLM_URL}
        """
    config = _parse(text, env={"VLLM_URL": "http://10.0.0.7:8000/v1/"})
    assert config.deployments[0].api_base == "http://10.0.0.7:8000/v1"
    assert config.deployments[0].locality is Locality.LOCAL
    # Not a warning: the default api_base would move a local model to the cloud.
    assert _problems(text) == (
        "model_list[0].litellm_params.api_base: environment variable VLLM_URL is not set",
    )


# --- groups, parameters, timeouts, context windows -------------------------------


def test_entries_sharing_a_model_name_form_one_group() -> None:
    config = _parse(
        """
        model_list:
          - model_name: chat
            litellm_params: {model: ollama/llama3.2, api_base: "http://gpu-1:11434/", weight: 3}
          - model_name: other
            litellm_params: {model: ollama/qwen3}
          - model_name: chat
            litellm_params: {model: openai/gpt-4o-mini, max_parallel_requests: 8, rpm: 60}
        """
    )
    assert list(config.groups) == ["chat", "other"]
    first, second = config.groups["chat"].deployments
    assert (first.id, second.id) == ("chat/0", "chat/1")
    assert first.model_group == second.model_group == "chat"
    assert first.api_base == "http://gpu-1:11434"  # trailing slash dropped
    assert first.weight == 3
    assert first.locality is Locality.LOCAL
    assert (second.provider, second.upstream_model) == (ProviderKind.OPENAI, "gpt-4o-mini")
    assert second.locality is Locality.CLOUD
    assert second.max_parallel_requests == 8
    assert second.rpm == 60
    assert config.groups["other"].deployments[0].api_base == "http://localhost:11434"
    assert [d.id for d in config.deployments] == ["chat/0", "chat/1", "other/0"]


def test_provider_params_are_kept_and_stream_is_accepted() -> None:
    config = parse_config(
        _one_model(
            model="ollama_chat/llama3.2",
            stream=True,
            num_ctx=32768,
            keep_alive="10m",
            temperature=0.2,
            drop_params=True,
        ),
        env={},
    )
    deployment = config.deployments[0]
    assert deployment.provider is ProviderKind.OLLAMA
    assert deployment.upstream_model == "llama3.2"
    assert dict(deployment.extra_params) == {
        "num_ctx": 32768,
        "keep_alive": "10m",
        "temperature": 0.2,
    }
    assert deployment.context_window == 32768
    assert config.warnings == ()


def test_timeouts_section_request_timeout_and_deployment_overrides() -> None:
    config = _parse(
        """
        timeouts: {connect: 2, first_token: 10, idle: 5.5}
        litellm_settings: {request_timeout: 90}
        model_list:
          - model_name: a
            litellm_params: {model: ollama/x, timeout: 30, stream_timeout: 3}
          - model_name: b
            litellm_params: {model: ollama/y}
        """
    )
    assert config.timeouts == Timeouts(connect=2, first_token=10, idle=5.5, total=90)
    assert config.groups["a"].deployments[0].timeouts == Timeouts(2, 3, 5.5, 30)
    assert config.groups["b"].deployments[0].timeouts == config.timeouts

    explicit = _parse(
        """
        timeouts: {total: 300}
        litellm_settings: {request_timeout: 90}
        model_list: [{model_name: a, litellm_params: {model: ollama/x}}]
        """
    )
    assert explicit.timeouts.total == 300
    assert _parse("model_list: [{model_name: a, litellm_params: {model: ollama/x}}]").timeouts == (
        Timeouts()
    )


@pytest.mark.parametrize(
    ("model_info", "params", "expected"),
    [
        ({"context_window": 1000, "max_input_tokens": 2000, "max_tokens": 3000}, {}, 1000),
        ({"max_input_tokens": 2000, "max_tokens": 3000}, {"num_ctx": 4000}, 2000),
        ({"max_tokens": 3000}, {"num_ctx": 4000}, 3000),
        ({}, {"num_ctx": 4000}, 4000),
        ({}, {}, 128_000),  # the windows
        ({"base_model": "gpt-4.1"}, {"model": "openai/my-finetune"}, 1_047_576),
        ({}, {"model": "openai/my-finetune"}, None),
    ],
    ids=[
        "context_window",
        "max_input_tokens",
        "info-max_tokens",
        "num_ctx",
        "windows",
        "base_model",
        "unknown",
    ],
)
def test_context_window_precedence(
    model_info: dict[str, Any], params: dict[str, Any], expected: int | None
) -> None:
    entry = {
        "model_name": "m",
        "litellm_params": {"model": "gpt-4o", **params},
        "model_info": model_info,
    }
    config = parse_config({"model_list": [entry]}, env={})
    assert config.deployments[0].context_window == expected


def test_output_cap_as_large_as_the_window_warns() -> None:
    config = parse_config(_one_model(model="ollama/x", num_ctx=4096, max_tokens=4096), env={})
    assert config.warnings == (
        "model_list[0].litellm_params.max_tokens: 4,096 leaves no room for the prompt in a "
        "4,096-token context window",
    )


def test_fallbacks_accept_the_list_and_the_mapping_form() -> None:
    models = """
        model_list:
          - {model_name: a, litellm_params: {model: ollama/a}}
          - {model_name: b, litellm_params: {model: ollama/b}}
          - {model_name: c, litellm_params: {model: gpt-4o}}
    """
    listed = _parse(
        models
        + """
        litellm_settings:
          fallbacks: [{a: [b, c]}, {b: [c]}]
          context_window_fallbacks: [{a: [c], b: [c]}]
        """
    )
    mapped = _parse(
        models
        + """
        litellm_settings:
          fallbacks: {a: [b, c], b: [c]}
          context_window_fallbacks: {a: [c], b: [c]}
        """
    )
    assert dict(listed.litellm_settings.fallbacks) == {"a": ("b", "c"), "b": ("c",)}
    assert listed.litellm_settings == mapped.litellm_settings
    assert dict(mapped.litellm_settings.context_window_fallbacks) == {"a": ("c",), "b": ("c",)}


def test_raw_sections_are_kept_for_later_features() -> None:
    config = _parse(
        """
        model_list: [{model_name: a, litellm_params: {model: ollama/a}}]
        routing_rules: {tasks: {classify: a}}
        privacy: {no_fallback_means_local: true}
        """
    )
    assert dict(config.routing_rules) == {"tasks": {"classify": "a"}}
    assert dict(config.privacy) == {"no_fallback_means_local": True}


# --- unknown keys -----------------------------------------------------------------


def test_unknown_keys_warn_but_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sidecar.config"):
        config = _parse(
            """
            model_list:
              - model_name: a
                litellm_params: {model: ollama/a, api_bsae: "http://x", rpm: 10, tags: [t]}
                model_info: {id: abc, mode: chat, supports_vision: true, colour: blue}
                extra: 1
            litellm_settings:
              set_verbose: true
              success_callback: [langfuse]
              cache: true
              content_policy_fallbacks: []
            router_settings:
              redis_host: localhost
              model_group_retry_policy:
                a: {RateLimitErrorRetries: 3, TimeoutErrorRetries: 1, num_retries: 2}
            general_settings: {alerting: [slack], frobnicate: 1}
            mystery: {}
            """
        )
    assert config.warnings == (
        "(top level): unknown key 'mystery' ignored",
        "litellm_settings: unknown key 'content_policy_fallbacks' ignored",
        "model_list[0]: unknown key 'extra' ignored",
        "model_list[0].litellm_params: unknown key 'api_bsae' ignored",
        "model_list[0].model_info: unknown key 'colour' ignored",
        "general_settings: unknown key 'frobnicate' ignored",
    )
    assert config.router_settings.model_group_retry_policy["a"].num_retries == 2
    assert config.deployments[0].extra_params == {}
    assert len([r for r in caplog.records if r.name == "sidecar.config"]) == 6


# --- broken configs -----------------------------------------------------------------

_TWO_MODELS = """
    model_list:
      - {model_name: m, litellm_params: {model: ollama/x}}
      - {model_name: n, litellm_params: {model: gpt-4o}}
"""

BROKEN: list[tuple[str, str, str]] = [
    ("top-level-list", "- a\n- b", "(top level): expected a mapping, got a list"),
    ("top-level-str", "hello", "(top level): expected a mapping, got str 'hello'"),
    ("empty", "", "(top level): expected a mapping, got an empty document"),
    ("no-model-list", "litellm_settings: {}", "model_list: required"),
    ("empty-model-list", "model_list: []", "model_list: must not be empty"),
    ("model-list-mapping", "model_list: {a: 1}", "model_list: expected a list, got a mapping"),
    ("entry-not-mapping", "model_list: [x]", "model_list[0]: expected a mapping, got str 'x'"),
    (
        "missing-model-name",
        "model_list: [{litellm_params: {model: ollama/x}}]",
        "model_list[0].model_name: required",
    ),
    (
        "model-name-int",
        "model_list: [{model_name: 7, litellm_params: {model: ollama/x}}]",
        "model_list[0].model_name: expected a string, got int 7",
    ),
    (
        "missing-litellm-params",
        "model_list: [{model_name: m}]",
        "model_list[0].litellm_params: required",
    ),
    (
        "litellm-params-list",
        "model_list: [{model_name: m, litellm_params: [1]}]",
        "model_list[0].litellm_params: expected a mapping, got a list",
    ),
    (
        "missing-model",
        _TWO_MODELS + "      - {model_name: o, litellm_params: {api_base: 'http://x'}}",
        "model_list[2].litellm_params.model: required",
    ),
    (
        "max-tokens-str",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, max_tokens: abc}}]",
        "model_list[0].litellm_params.max_tokens: expected an integer, got str 'abc'",
    ),
    (
        "max-tokens-bool",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, max_tokens: true}}]",
        "model_list[0].litellm_params.max_tokens: expected an integer, got bool True",
    ),
    (
        "max-tokens-float",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, max_tokens: 1.5}}]",
        "model_list[0].litellm_params.max_tokens: expected an integer, got float 1.5",
    ),
    (
        "max-tokens-zero",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, max_tokens: 0}}]",
        "model_list[0].litellm_params.max_tokens: must be > 0, got 0",
    ),
    (
        "timeout-str",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, timeout: fast}}]",
        "model_list[0].litellm_params.timeout: expected a number, got str 'fast'",
    ),
    (
        "weight-negative",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, weight: -1}}]",
        "model_list[0].litellm_params.weight: must be > 0, got -1",
    ),
    (
        "stream-str",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, stream: 'yes'}}]",
        "model_list[0].litellm_params.stream: expected true or false, got str 'yes'",
    ),
    (
        "api-key-int",
        "model_list: [{model_name: m, litellm_params: {model: gpt-4o, api_key: 12345}}]",
        "model_list[0].litellm_params.api_key: expected a string, got int",
    ),
    (
        "env-without-name",
        "model_list: [{model_name: m, litellm_params: {model: gpt-4o, api_key: os.environ/}}]",
        "model_list[0].litellm_params.api_key: 'os.environ/' must be followed by a variable name",
    ),
    (
        "bad-prefix",
        "model_list: [{model_name: m, litellm_params: {model: mistral/large}}]",
        f"model_list[0].litellm_params.model: unsupported model 'mistral/large': "
        f"{SUPPORTED_MODELS}",
    ),
    (
        "prefix-without-model",
        "model_list: [{model_name: m, litellm_params: {model: ollama/}}]",
        "model_list[0].litellm_params.model: model name missing after 'ollama/'",
    ),
    (
        "vllm-without-api-base",
        "model_list: [{model_name: m, litellm_params: {model: hosted_vllm/llama}}]",
        "model_list[0].litellm_params.api_base: required for 'hosted_vllm/' models",
    ),
    (
        "api-base-not-http",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, api_base: 'ftp://h'}}]",
        "model_list[0].litellm_params.api_base: expected an http:// or https:// URL with a host, "
        "got 'ftp://h'",
    ),
    (
        "api-base-bad-port",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x, api_base: 'http://h:x'}}]",
        "model_list[0].litellm_params.api_base: invalid URL 'http://h:x': malformed host or port",
    ),
    (
        "bad-locality",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x}, "
        "model_info: {locality: edge}}]",
        "model_list[0].model_info.locality: expected one of 'local', 'cloud', got 'edge'",
    ),
    (
        "context-window-str",
        "model_list: [{model_name: m, litellm_params: {model: ollama/x}, "
        "model_info: {context_window: big}}]",
        "model_list[0].model_info.context_window: expected an integer, got str 'big'",
    ),
    (
        "bad-model-duration",
        "model_list: [{model_name: m, litellm_params: {model: gpt-4o}, "
        "model_info: {max_budget: 5, budget_duration: 30 days}}]",
        "model_list[0].model_info.budget_duration: expected a duration such as '30d', '12h' or "
        "'1mo' (a count followed by s, m, h, d, w or mo), got str '30 days'",
    ),
    (
        "bad-general-duration",
        _TWO_MODELS + "    general_settings: {budget_duration: 30}",
        "general_settings.budget_duration: expected a duration such as '30d', '12h' or '1mo' "
        "(a count followed by s, m, h, d, w or mo), got int 30",
    ),
    (
        "negative-budget",
        _TWO_MODELS + "    general_settings: {max_budget: -5}",
        "general_settings.max_budget: must be >= 0, got -5",
    ),
    (
        "bad-strategy",
        _TWO_MODELS + "    router_settings: {routing_strategy: round-robin}",
        "router_settings.routing_strategy: expected one of 'simple-shuffle', 'least-busy', "
        "'latency-based-routing', 'usage-based-routing', 'usage-based-routing-v2', "
        "'cost-based-routing', got 'round-robin'",
    ),
    (
        "pre-call-checks-str",
        _TWO_MODELS + "    router_settings: {enable_pre_call_checks: sometimes}",
        "router_settings.enable_pre_call_checks: expected true or false, got str 'sometimes'",
    ),
    (
        "unknown-default-fallback",
        _TWO_MODELS + "    litellm_settings: {default_fallbacks: [n, nope]}",
        "litellm_settings.default_fallbacks[1]: unknown model 'nope' (known: m, n)",
    ),
    (
        "default-fallbacks-str",
        _TWO_MODELS + "    litellm_settings: {default_fallbacks: n}",
        "litellm_settings.default_fallbacks: expected a list of model names, got str 'n'",
    ),
    (
        "unknown-fallback-source",
        _TWO_MODELS + "    litellm_settings: {context_window_fallbacks: [{m: [n]}, {x: [n]}]}",
        "litellm_settings.context_window_fallbacks[1]: unknown model 'x' (known: m, n)",
    ),
    (
        "unknown-fallback-target",
        _TWO_MODELS + "    litellm_settings: {fallbacks: [{m: [n, y]}]}",
        "litellm_settings.fallbacks[0].m[1]: unknown model 'y' (known: m, n)",
    ),
    (
        "fallback-mapping-form-unknown",
        _TWO_MODELS + "    litellm_settings: {fallbacks: {m: [z]}}",
        "litellm_settings.fallbacks.m[0]: unknown model 'z' (known: m, n)",
    ),
    (
        "fallback-item-str",
        _TWO_MODELS + "    litellm_settings: {fallbacks: [m]}",
        "litellm_settings.fallbacks[0]: expected a mapping of model name to fallbacks, got str 'm'",
    ),
    (
        "fallback-twice",
        _TWO_MODELS + "    litellm_settings: {fallbacks: [{m: [n]}, {m: [n]}]}",
        "litellm_settings.fallbacks[1]: fallbacks for 'm' are given twice",
    ),
    (
        "retry-policy-unknown-alias",
        _TWO_MODELS + "    router_settings: {model_group_retry_policy: {q: {num_retries: 1}}}",
        "router_settings.model_group_retry_policy: unknown model 'q' (known: m, n)",
    ),
    (
        "retry-policy-unknown-fallback",
        _TWO_MODELS + "    router_settings: {model_group_retry_policy: {m: {fallbacks: [w]}}}",
        "router_settings.model_group_retry_policy.m.fallbacks[0]: unknown model 'w' (known: m, n)",
    ),
    (
        "retry-policy-negative-retries",
        _TWO_MODELS + "    router_settings: {model_group_retry_policy: {m: {num_retries: -1}}}",
        "router_settings.model_group_retry_policy.m.num_retries: must be >= 0, got -1",
    ),
    (
        "request-timeout-zero",
        _TWO_MODELS + "    litellm_settings: {request_timeout: 0}",
        "litellm_settings.request_timeout: must be > 0, got 0",
    ),
    (
        "timeouts-negative",
        _TWO_MODELS + "    timeouts: {connect: -1}",
        "timeouts.connect: must be > 0, got -1",
    ),
    (
        "timeouts-not-mapping",
        _TWO_MODELS + "    timeouts: 5",
        "timeouts: expected a mapping, got int 5",
    ),
    (
        "routing-rules-list",
        _TWO_MODELS + "    routing_rules: [a]",
        "routing_rules: expected a mapping, got a list",
    ),
    (
        "privacy-str",
        _TWO_MODELS + "    privacy: strict",
        "privacy: expected a mapping, got str 'strict'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_names_the_key_path(text: str, expected: str) -> None:
    assert _problems(text) == (expected,)


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        """
        model_list:
          - model_name: a
            litellm_params: {model: ollama/x, max_tokens: many}
          - model_name: b
            litellm_params: {}
        litellm_settings: {default_fallbacks: [c]}
        router_settings: {routing_strategy: fastest}
        """
    )
    assert sorted(problems) == sorted(
        (
            "model_list[0].litellm_params.max_tokens: expected an integer, got str 'many'",
            "model_list[1].litellm_params.model: required",
            "router_settings.routing_strategy: expected one of 'simple-shuffle', 'least-busy', "
            "'latency-based-routing', 'usage-based-routing', 'usage-based-routing-v2', "
            "'cost-based-routing', got 'fastest'",
            "litellm_settings.default_fallbacks[0]: unknown model 'c' (known: a, b)",
        )
    )


def test_a_broken_entry_still_counts_as_a_known_alias() -> None:
    # Only the real problem is reported, not a knock-on "unknown model 'b'".
    problems = _problems(
        """
        model_list:
          - {model_name: a, litellm_params: {model: ollama/x}}
          - {model_name: b, litellm_params: {model: bogus}}
        litellm_settings: {default_fallbacks: [b]}
        """
    )
    assert len(problems) == 1
    assert problems[0].startswith("model_list[1].litellm_params.model: unsupported model")


# --- files ------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ("file not found",)
    assert str(info.value) == f"{path}: file not found"


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read the file: ")


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model_list:\n  - model_name: a\n    litellm_params: {model: ollama/x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith("invalid YAML at line 4, column 1: ")
    assert str(info.value).startswith(f"{path}: invalid YAML at line 4")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ("(top level): expected a mapping, got an empty document",)


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model_list: [\xff]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ("not UTF-8 text (byte 13)",)


# --- locality and providers -------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "api_base", "model_info", "expected"),
    [
        ("openai/x", "http://localhost:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://127.0.0.1:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://127.8.9.10:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://10.1.2.3:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://172.20.0.5:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://172.32.0.5:8000/v1", {}, Locality.CLOUD),
        ("openai/x", "http://192.168.1.20:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://169.254.10.1/v1", {}, Locality.LOCAL),
        ("hosted_vllm/x", "http://vllm:8000/v1", {}, Locality.LOCAL),
        ("openai/x", "http://[::1]:8080/v1", {}, Locality.LOCAL),
        ("openai/x", "http://[fd12::5]:8080/v1", {}, Locality.LOCAL),
        ("openai/x", "http://[::ffff:192.168.0.1]/v1", {}, Locality.LOCAL),
        ("openai/x", "http://8.8.8.8/v1", {}, Locality.CLOUD),
        ("openai/x", "https://api.openai.com/v1", {}, Locality.CLOUD),
        ("openai/x", "https://llm.internal.example.com/v1", {}, Locality.CLOUD),
        ("gpt-4o", None, {}, Locality.CLOUD),
        ("claude-3-haiku-20240307", None, {}, Locality.CLOUD),
        ("gemini-2.5-flash", None, {}, Locality.CLOUD),
        ("ollama/x", "https://ollama.example.com", {}, Locality.LOCAL),
        ("openai/x", "https://gpu.example.com/v1", {"locality": "local"}, Locality.LOCAL),
        ("ollama/x", "http://localhost:11434", {"locality": "cloud"}, Locality.CLOUD),
    ],
)
def test_locality_inference(
    model: str, api_base: str | None, model_info: dict[str, Any], expected: Locality
) -> None:
    params: dict[str, Any] = {"model": model}
    if api_base is not None:
        params["api_base"] = api_base
    entry = {"model_name": "m", "litellm_params": params, "model_info": model_info}
    config = parse_config({"model_list": [entry]}, env={})
    assert config.deployments[0].locality is expected


@pytest.mark.parametrize(
    ("model", "provider", "upstream", "api_base"),
    [
        ("ollama/llama3.2:8b", ProviderKind.OLLAMA, "llama3.2:8b", "http://localhost:11434"),
        ("ollama_chat/qwen3", ProviderKind.OLLAMA, "qwen3", "http://localhost:11434"),
        ("openai/gpt-4o", ProviderKind.OPENAI, "gpt-4o", "https://api.openai.com/v1"),
        ("hosted_vllm/meta/llama", ProviderKind.OPENAI, "meta/llama", None),
        ("gpt-4o-mini", ProviderKind.OPENAI, "gpt-4o-mini", "https://api.openai.com/v1"),
        ("o1-mini", ProviderKind.OPENAI, "o1-mini", "https://api.openai.com/v1"),
        ("o3", ProviderKind.OPENAI, "o3", "https://api.openai.com/v1"),
        ("o4-mini", ProviderKind.OPENAI, "o4-mini", "https://api.openai.com/v1"),
        ("chatgpt-4o-latest", ProviderKind.OPENAI, "chatgpt-4o-latest", None),
        ("anthropic/claude-x", ProviderKind.ANTHROPIC, "claude-x", "https://api.anthropic.com"),
        ("claude-sonnet-4-20250514", ProviderKind.ANTHROPIC, "claude-sonnet-4-20250514", None),
        ("gemini/gemini-2.5-pro", ProviderKind.GEMINI, "gemini-2.5-pro", None),
        ("gemini-2.5-flash", ProviderKind.GEMINI, "gemini-2.5-flash", None),
    ],
)
def test_resolve_model(
    model: str, provider: ProviderKind, upstream: str, api_base: str | None
) -> None:
    resolved = resolve_model(model)
    assert (resolved.provider, resolved.upstream_model) == (provider, upstream)
    if api_base is not None:
        assert resolved.default_api_base == api_base


@pytest.mark.parametrize("model", ["mistral/large", "llama3", "azure/gpt-4o", "Ollama/x"])
def test_resolve_model_rejects_unsupported(model: str) -> None:
    with pytest.raises(ValueError, match="unsupported model"):
        resolve_model(model)


def test_default_api_bases_of_the_clouds() -> None:
    config = _parse(
        """
        model_list:
          - {model_name: g, litellm_params: {model: gemini/gemini-2.5-pro}}
          - {model_name: c, litellm_params: {model: anthropic/claude-x}}
        """
    )
    assert config.groups["g"].deployments[0].api_base == (
        "https://generativelanguage.googleapis.com"
    )
    assert config.groups["c"].deployments[0].api_base == "https://api.anthropic.com"


@pytest.mark.parametrize(
    ("host", "local"),
    [("localhost", True), ("ollama", True), ("fe80::1", True), ("", False), ("a.b", False)],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local


# --- the windows ----------------------------------------------------------------


def test_bundled_catalogue() -> None:
    windows = load_context_windows()
    assert windows.context_window("gpt-4o") == 128_000
    assert windows.context_window("gpt-4o-mini") == 128_000
    assert windows.context_window("GPT-4o-2024-08-06") == 128_000
    assert windows.context_window("claude-3-5-haiku-20241022") == 200_000
    assert windows.context_window("gemini-2.5-flash-lite") == 1_048_576
    assert windows.context_window("o1-mini-2024-09-12") == 128_000
    assert windows.context_window("o1") == 200_000
    assert windows.context_window("gpt-4") == 8192
    assert windows.context_window("llama3.2:8b") is None


def test_catalogue_exact_beats_pattern_and_longest_pattern_wins() -> None:
    windows = ContextWindows.from_data(
        {"context_windows": {"a*": 1, "ab*": 2, "abc": 3, "abc*": 4}}
    )
    assert windows.context_window("abc") == 3
    assert windows.context_window("abcd") == 4
    assert windows.context_window("abx") == 2
    assert windows.context_window("ax") == 1
    assert windows.context_window("b") is None


def test_catalogue_parse_config_uses_the_given_catalogue() -> None:
    windows = ContextWindows.from_data({"context_windows": {"gpt-4o": 7}})
    config = parse_config(_one_model(model="gpt-4o"), env={}, windows=windows)
    assert config.deployments[0].context_window == 7


def test_broken_catalogue_lists_its_entries() -> None:
    with pytest.raises(ConfigError) as info:
        ContextWindows.from_data({"context_windows": {"a": "big", "*": 3, "b": True}})
    assert info.value.problems == (
        "context_windows.a: expected a positive integer, got 'big'",
        "context_windows: expected a model name, got '*'",
        "context_windows.b: expected a positive integer, got True",
    )
    with pytest.raises(ConfigError):
        ContextWindows.from_data([])


# --- the table --------------------------------------------------------------------


def test_model_table_lists_every_alias_and_no_secret() -> None:
    config = load_config(SEED_FULL, env=KEYS)
    table = render_model_table(config)

    for alias in config.groups:
        assert alias in table
    for deployment in config.deployments:
        assert deployment.id in table
        assert deployment.api_base in table
    for secret in [*KEYS.values(), "sk-your-proxy-master-key", "password"]:
        assert secret not in table
    assert "128,000" in table
    assert "200,000" in table
    assert "unknown" in table
    assert "master_key: set" in table
    assert "database_url: set" in table
    assert "fast-local -> strong-local" in table
    assert "default: cloud-fast" in table
    assert "latency-based-routing" in table
    assert "simulated" not in table


def test_model_table_marks_simulated_and_shows_warnings() -> None:
    config = load_config(SEED, env={})
    fast = config.groups["fast-local"]
    simulated = tuple(replace(d, simulated=True) for d in fast.deployments)
    groups = {**config.groups, "fast-local": replace(fast, deployments=simulated)}
    table = render_model_table(replace(config, groups=groups))

    fast_row = next(line for line in table.splitlines() if line.startswith("fast-local "))
    assert fast_row.endswith("simulated")
    assert "environment variable OPENAI_API_KEY is not set" in table
    assert "budget: $200.00 per 30d" in table

    bare = render_model_table(_parse("model_list: [{model_name: a, litellm_params: {model: o3}}]"))
    assert "master_key: unset" in bare
    assert "budget: none" in bare


def test_group_retry_policy_sets_group_timeouts_and_hedging() -> None:
    config = _parse(
        """
        model_list:
          - {model_name: fast-local, litellm_params: {model: ollama/a}}
          - {model_name: other, litellm_params: {model: ollama/b}}
          - {model_name: own, litellm_params: {model: ollama/c, stream_timeout: 9}}
        timeouts: {first_token: 20, idle: 7}
        router_settings:
          model_group_retry_policy:
            fast-local:
              timeout_seconds: 5
              hedge_after_ms: 150
              timeouts: {idle: 2}
            own: {timeout_seconds: 4}
        """
    )
    fast = config.groups["fast-local"].deployments[0].timeouts
    assert (fast.first_token, fast.idle) == (5, 2)
    other = config.groups["other"].deployments[0].timeouts
    assert (other.first_token, other.idle) == (20, 7)
    # A deployment's own stream_timeout beats its group's policy.
    assert config.groups["own"].deployments[0].timeouts.first_token == 9
    policy = config.router_settings.model_group_retry_policy["fast-local"]
    assert policy.hedge_after_ms == 150
    assert policy.hedge_to_cloud is False


def test_health_section() -> None:
    config = _parse(
        """
        model_list: [{model_name: m, litellm_params: {model: ollama/a}}]
        health: {failure_threshold: 2, cooldown: 1.5, probe_interval: 0}
        """
    )
    assert config.health.failure_threshold == 2
    assert config.health.cooldown == 1.5
    assert config.health.probe_interval == 0
    assert _problems(
        """
        model_list: [{model_name: m, litellm_params: {model: ollama/a}}]
        health: {failure_threshold: 0}
        """
    ) == ("health.failure_threshold: must be >= 1, got 0",)


def test_panic_threshold_and_not_pulled_recheck() -> None:
    config = _parse(
        """
        model_list: [{model_name: m, litellm_params: {model: ollama/a}}]
        health: {panic_threshold: 0, not_pulled_recheck: 2}
        """
    )
    assert config.health.panic_threshold == 0.0
    assert config.health.not_pulled_recheck == 2.0
    defaults = _parse("model_list: [{model_name: m, litellm_params: {model: ollama/a}}]")
    assert defaults.health.panic_threshold == 0.5
    assert _problems(
        """
        model_list: [{model_name: m, litellm_params: {model: ollama/a}}]
        health: {panic_threshold: 1.5, not_pulled_recheck: 0}
        """
    ) == (
        "health.not_pulled_recheck: must be > 0, got 0",
        "health.panic_threshold: must be <= 1, got 1.5",
    )


def test_numbers_in_scientific_notation_are_numbers() -> None:
    # YAML 1.1 reads 1e-05 (no dot) as a string; people write token prices that way.
    raw = yaml.safe_load(
        textwrap.dedent(
            """
            model_list:
              - model_name: m
                litellm_params:
                  model: openai/gpt-4o-mini
                  api_key: sk-x
                  input_cost_per_token: 1.5e-07
                  output_cost_per_token: 6e-07
                  tpm: 2E6
                  timeout: 3e1
                model_info: {input_cost_per_token: "1e-05"}
            health: {cooldown: 5e-1}
            """
        )
    )
    assert raw["model_list"][0]["litellm_params"]["output_cost_per_token"] == "6e-07"
    config = parse_config(raw, env={})
    d = config.groups["m"].deployments[0]
    assert d.input_cost_per_token == pytest.approx(1.5e-07)
    assert d.output_cost_per_token == pytest.approx(6e-07)
    assert d.tpm == 2_000_000
    assert d.timeouts.total == 30.0
    assert config.health.cooldown == 0.5
    assert _problems(
        """
        model_list:
          - model_name: m
            litellm_params: {model: ollama/a, tpm: 2.5e0, timeout: 1e}
        """
    ) == (
        "model_list[0].litellm_params.timeout: expected a number, got str '1e'",
        "model_list[0].litellm_params.tpm: expected an integer, got float 2.5",
    )
