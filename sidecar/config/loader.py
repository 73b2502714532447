"""Turn LiteLLM-proxy YAML into the frozen `SidecarConfig`, validated once.

Every problem is collected with its key path (`model_list[2].litellm_params.model:
required`) and reported together in one `ConfigError`, so a broken file is fixed in one
pass. Unknown keys are warnings, not errors: LiteLLM files carry many settings this
sidecar has no use for, and the common ones are recognised and skipped quietly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import yaml

from sidecar.config.model import (
    BudgetSettings,
    Deployment,
    FrontDoors,
    GeneralSettings,
    HealthConfig,
    Limits,
    LitellmSettings,
    ModelGroup,
    RetryPolicy,
    RouterSettings,
    SidecarConfig,
    SpendCap,
    Timeouts,
)
from sidecar.config.observability import logging_config, quality_config, telemetry_config
from sidecar.config.providers import (
    ApiBase,
    ResolvedModel,
    infer_locality,
    normalize_api_base,
    resolve_model,
)
from sidecar.config.reader import ENV_PREFIX, Findings, Section, describe
from sidecar.config.windows import ContextWindows, load_context_windows
from sidecar.errors import ConfigError
from sidecar.types import Locality

_log = logging.getLogger("sidecar.config")
_HEADER_SAFE = re.compile(r"[\x20-\x7e]{1,200}")
_T = TypeVar("_T")

ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "usage-based-routing",
    "usage-based-routing-v2",
    "cost-based-routing",
)

_TOP_KEYS = frozenset(
    {
        "model_list",
        "litellm_settings",
        "router_settings",
        "general_settings",
        "timeouts",
        "health",
        "telemetry",
        "routing_rules",
        "privacy",
        "budget",
        "limits",
        "logging",
        "quality_monitoring",
        "front_doors",
    }
)
_ENTRY_KEYS = frozenset({"model_name", "litellm_params", "model_info"})
_PARAM_KEYS = frozenset(
    {
        "model",
        "api_base",
        "api_key",
        "max_tokens",
        "stream",
        "timeout",
        "stream_timeout",
        "weight",
        "max_parallel_requests",
        "rpm",
        "tpm",
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "max_budget",
        "budget_duration",
    }
)
# Request parameters a provider forwards upstream as they are (Ollama options and
# keep_alive, OpenAI-style sampling settings): kept in Deployment.extra_params.
_PASSTHROUGH_PARAMS = frozenset(
    {
        "num_ctx",
        "keep_alive",
        "num_predict",
        "num_keep",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "use_mmap",
        "think",
        "format",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "seed",
        "stop",
        "repeat_penalty",
        "repeat_last_n",
        "presence_penalty",
        "frequency_penalty",
        "reasoning_effort",
        "response_format",
    }
)
_QUIET_PARAMS = frozenset({"drop_params", "additional_drop_params", "tags", "use_in_pass_through"})
_INFO_KEYS = frozenset(
    {
        "description",
        "locality",
        "context_window",
        "max_input_tokens",
        "max_tokens",
        "max_budget",
        "budget_duration",
        "base_model",
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "free",
    }
)
_QUIET_INFO = frozenset(
    {
        "id",
        "mode",
        "max_output_tokens",
        "litellm_provider",
        "access_groups",
        "team_id",
        "tier",
        "db_model",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
    }
)
_LITELLM_KEYS = frozenset(
    {
        "request_timeout",
        "num_retries",
        "default_fallbacks",
        "fallbacks",
        "context_window_fallbacks",
        "max_budget",
        "budget_duration",
        "max_end_user_budget",
    }
)
# Logging, callbacks and caching switches: they change nothing about routing.
_QUIET_LITELLM = frozenset(
    {
        "set_verbose",
        "json_logs",
        "drop_params",
        "modify_params",
        "success_callback",
        "failure_callback",
        "callbacks",
        "service_callback",
        "cache",
        "cache_params",
        "telemetry",
        "turn_off_message_logging",
        "redact_messages_in_exceptions",
        "redact_user_api_key_info",
        "log_raw_request_response",
        "return_response_headers",
        "enable_preview_features",
    }
)
_ROUTER_KEYS = frozenset(
    {
        "routing_strategy",
        "enable_pre_call_checks",
        "model_group_retry_policy",
        "provider_budget_config",
        "redis_host",
        "redis_port",
        "redis_password",
        "redis_url",
    }
)
_QUIET_ROUTER = frozenset({"cache_responses", "debug_level"})
_RETRY_KEYS = frozenset(
    {"timeout_seconds", "num_retries", "fallbacks", "hedge_after_ms", "hedge_to_cloud", "timeouts"}
)
_HEALTH_KEYS = frozenset(f.name for f in dataclasses.fields(HealthConfig))
_LIMIT_FIELDS = dataclasses.fields(Limits)
# LiteLLM's own retry policy shape: retry counts per exception class.
_QUIET_RETRY = frozenset(
    {
        "BadRequestErrorRetries",
        "AuthenticationErrorRetries",
        "TimeoutErrorRetries",
        "RateLimitErrorRetries",
        "ContentPolicyViolationErrorRetries",
        "InternalServerErrorRetries",
    }
)
_GENERAL_KEYS = frozenset({"master_key", "database_url", "max_budget", "budget_duration"})
_QUIET_GENERAL = frozenset(
    {
        "alerting",
        "alerting_threshold",
        "alert_types",
        "proxy_batch_write_at",
        "database_connection_pool_limit",
        "database_connection_timeout",
        "disable_spend_logs",
        "disable_error_logs",
        "store_model_in_db",
        "ui_access_mode",
        "background_health_checks",
        "health_check_interval",
        "health_check_details",
        "disable_master_key_return",
    }
)
_TIMEOUT_KEYS = frozenset({"connect", "first_token", "idle", "total"})
_BUDGET_KEYS = frozenset(
    {
        "data_dir",
        "ledger",
        "redis_url",
        "redis_prefix",
        "on_ledger_error",
        "callers",
        "default_caller",
        "refresh_interval",
        "reservation_grace",
        "default_answer_tokens",
        "spend_log_queue",
        "spend_log_batch",
        "spend_log_interval",
    }
)
_CAP_KEYS = frozenset({"max_budget", "budget_duration"})


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    log_warnings: bool = True,
) -> SidecarConfig:
    """Read, parse and validate a config file; ConfigError names the file and every problem.

    Warnings are logged unless `log_warnings` is false (for a caller that shows
    `config.warnings` itself); they are in `config.warnings` either way."""
    return load_config_hashed(path, env, log_warnings=log_warnings)[0]


def load_config_hashed(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    log_warnings: bool = True,
) -> tuple[SidecarConfig, str]:
    """`load_config`, with the sha256 (hex) of exactly the bytes it parsed: what a reload
    compares and `llm-sidecar status` shows."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            raw = file.read()
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(["file not found"], source) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], source) from exc
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"invalid YAML{where}: {exc.problem or exc.context}"], source) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {exc}"], source) from exc
    config = parse_config(data, source=source, env=env, log_warnings=log_warnings)
    return config, hashlib.sha256(raw).hexdigest()


def parse_config(
    data: object,
    *,
    source: str = "",
    env: Mapping[str, str] | None = None,
    windows: ContextWindows | None = None,
    log_warnings: bool = True,
) -> SidecarConfig:
    """Validate parsed YAML into a SidecarConfig, or raise one ConfigError listing all problems.

    `env` resolves `os.environ/NAME` values (default: the process environment);
    `windows` supplies known context windows (default: the bundled one).
    """
    findings = Findings()
    config: SidecarConfig | None = None
    if data is None:
        findings.error("", "expected a mapping, got an empty document")
    elif not isinstance(data, Mapping):
        findings.error("", f"expected a mapping, got {describe(data)}")
    else:
        config = _parse_top(
            Section(data, "", findings),
            os.environ if env is None else env,
            load_context_windows() if windows is None else windows,
            source,
        )
    for warning in findings.warnings if log_warnings else ():
        _log.warning("%s%s", f"{source}: " if source else "", warning)
    if findings.errors or config is None:
        raise ConfigError(findings.errors, source)
    return config


def _parse_top(
    top: Section, env: Mapping[str, str], windows: ContextWindows, source: str
) -> SidecarConfig:
    top.check_keys(_TOP_KEYS)
    litellm = _litellm_settings(top.section("litellm_settings"))
    timeouts = _timeouts(top.section("timeouts"), litellm.request_timeout)
    router = _router_settings(top.section("router_settings"), timeouts)
    groups, aliases = _model_list(top, env, windows, timeouts, router)
    health = _health(top.section("health"))
    limits = _limits(top.section("limits"))
    telemetry = telemetry_config(top.section("telemetry"))
    logging_settings = logging_config(top.section("logging"))
    quality = quality_config(top.section("quality_monitoring"))
    doors = top.section("front_doors")
    doors.check_keys(frozenset({"ollama_port"}))
    ollama_port = doors.integer("ollama_port", ge=0)
    if ollama_port is not None and ollama_port > 65535:
        doors.error("ollama_port", f"must be a TCP port (0 to 65535), got {ollama_port}")
        ollama_port = None
    general = _general_settings(top.section("general_settings"), env)
    budget = _budget(top.section("budget"), top.section("router_settings"), env)
    routing_rules = top.raw_mapping("routing_rules")
    privacy = top.raw_mapping("privacy")
    if aliases:
        top.findings.check_aliases(aliases)
    return SidecarConfig(
        groups=groups,
        litellm_settings=litellm,
        router_settings=router,
        general_settings=general,
        timeouts=timeouts,
        health=health,
        telemetry=telemetry,
        logging=logging_settings,
        quality=quality,
        budget=budget,
        limits=limits,
        front_doors=FrontDoors(ollama_port=ollama_port),
        routing_rules=routing_rules,
        privacy=privacy,
        source=source,
        warnings=tuple(top.findings.warnings),
    )


def _model_list(
    top: Section,
    env: Mapping[str, str],
    windows: ContextWindows,
    timeouts: Timeouts,
    router: RouterSettings,
) -> tuple[dict[str, ModelGroup], frozenset[str]]:
    """The groups in file order, and every alias named (even by a broken entry)."""
    path = top.path_of("model_list")
    entries = top.data.get("model_list")
    if entries is None:
        top.findings.error(path, "required")
        return {}, frozenset()
    if not isinstance(entries, list):
        top.findings.error(path, f"expected a list, got {describe(entries)}")
        return {}, frozenset()
    if not entries:
        top.findings.error(path, "must not be empty")
        return {}, frozenset()
    members: dict[str, list[Deployment]] = {}
    aliases: set[str] = set()
    for index, raw in enumerate(entries):
        entry_path = f"{path}[{index}]"
        if not isinstance(raw, Mapping):
            top.findings.error(entry_path, f"expected a mapping, got {describe(raw)}")
            continue
        entry = Section(raw, entry_path, top.findings)
        name = entry.string("model_name", required=True)
        if name is not None and not name.strip():
            entry.error("model_name", "must not be empty")
            name = None
        elif name is not None and not _HEADER_SAFE.fullmatch(name):
            # It names the deployment in x-sidecar-deployment headers and gRPC metadata.
            entry.error("model_name", "must be printable ASCII (it is sent in response headers)")
            name = None
        if name is not None:
            aliases.add(name)
        group = members.setdefault(name, []) if name is not None else []
        policy = router.model_group_retry_policy.get(name) if name else None
        group_timeouts = policy.timeouts if policy and policy.timeouts else timeouts
        deployment = _deployment(entry, name, len(group), env, windows, group_timeouts)
        if deployment is not None:
            group.append(deployment)
    groups = {
        name: ModelGroup(
            name=name,
            deployments=tuple(deployments),
            description=next((d.description for d in deployments if d.description), ""),
        )
        for name, deployments in members.items()
        if deployments
    }
    return groups, frozenset(aliases)


def _deployment(
    entry: Section,
    name: str | None,
    index: int,
    env: Mapping[str, str],
    windows: ContextWindows,
    defaults: Timeouts,
) -> Deployment | None:
    """One model_list entry; None when it is unusable (the problems are recorded)."""
    entry.check_keys(_ENTRY_KEYS)
    params = entry.section("litellm_params", required=True)
    info = entry.section("model_info")
    params.check_keys(_PARAM_KEYS | _PASSTHROUGH_PARAMS, quiet=_QUIET_PARAMS)
    info.check_keys(_INFO_KEYS, quiet=_QUIET_INFO, quiet_prefixes=("supports_",))

    resolved: ResolvedModel | None = None
    model = params.string("model", required=True)
    if model is not None:
        try:
            resolved = resolve_model(model)
        except ValueError as exc:
            params.error("model", str(exc))
    api_base = _api_base(params, resolved, env)
    api_key = params.secret("api_key", env)
    max_tokens = params.integer("max_tokens", gt=0)
    params.boolean("stream")  # LiteLLM's per-deployment default; the caller decides here
    timeout = params.number("timeout", gt=0)
    stream_timeout = params.number("stream_timeout", gt=0)
    weight = params.number("weight", gt=0)
    max_parallel = params.integer("max_parallel_requests", gt=0)
    rpm = params.integer("rpm", gt=0)
    tpm = params.integer("tpm", gt=0)
    num_ctx = params.integer("num_ctx", gt=0)
    input_cost = _first(
        params.number("input_cost_per_token", ge=0), info.number("input_cost_per_token", ge=0)
    )
    output_cost = _first(
        params.number("output_cost_per_token", ge=0), info.number("output_cost_per_token", ge=0)
    )

    description = info.string("description") or ""
    locality = info.choice("locality", ("local", "cloud"))
    base_model = info.string("base_model")
    window = _first(
        info.integer("context_window", gt=0),
        info.integer("max_input_tokens", gt=0),
        info.integer("max_tokens", gt=0),
        num_ctx,
    )
    max_budget = info.number("max_budget", ge=0)
    budget_duration = info.duration("budget_duration")
    own_budget = params.number("max_budget", ge=0)
    own_duration = params.duration("budget_duration")
    cached_cost = _first(
        params.number("cache_read_input_token_cost", ge=0),
        info.number("cache_read_input_token_cost", ge=0),
    )
    free = _or(info.boolean("free"), False)
    supports_tools = _or(info.boolean("supports_function_calling"), True)

    if name is None or resolved is None or api_base is None:
        return None
    if window is None:
        window = windows.context_window(resolved.upstream_model)
    if window is None and base_model is not None:
        window = windows.context_window(base_model)
    if max_tokens is not None and window is not None and max_tokens >= window:
        entry.findings.warn(
            params.path_of("max_tokens"),
            f"{max_tokens:,} leaves no room for the prompt in a {window:,}-token context window",
        )
    return Deployment(
        id=f"{name}/{index}",
        model_group=name,
        provider=resolved.provider,
        upstream_model=resolved.upstream_model,
        api_base=api_base.url,
        api_key=api_key,
        api_auth=api_base.auth,
        locality=(
            Locality(locality)
            if locality is not None
            else infer_locality(resolved.provider, api_base.url)
        ),
        context_window=window,
        max_output_tokens=max_tokens,
        timeouts=Timeouts(
            connect=defaults.connect,
            first_token=defaults.first_token if stream_timeout is None else stream_timeout,
            idle=defaults.idle,
            total=defaults.total if timeout is None else timeout,
        ),
        weight=_or(weight, 1.0),
        max_parallel_requests=max_parallel,
        extra_params={
            key: value
            for key, value in params.data.items()
            if key in _PASSTHROUGH_PARAMS and value is not None
        },
        description=description,
        rpm=rpm,
        tpm=tpm,
        max_budget=max_budget,
        budget_duration=budget_duration,
        input_cost_per_token=input_cost,
        output_cost_per_token=output_cost,
        cache_read_input_token_cost=cached_cost,
        deployment_max_budget=own_budget,
        deployment_budget_duration=own_duration,
        base_model=base_model,
        free=free,
        supports_tools=supports_tools,
    )


def _api_base(
    params: Section, resolved: ResolvedModel | None, env: Mapping[str, str]
) -> ApiBase | None:
    raw = params.string("api_base")
    if raw is not None and raw.startswith(ENV_PREFIX):
        # Unlike a missing key, a missing address is an error: falling back to the
        # provider's default could send local traffic to a cloud.
        name = raw[len(ENV_PREFIX) :].strip()
        raw = env.get(name) or None
        if raw is None:
            params.error("api_base", f"environment variable {name or '(none)'} is not set")
            return None
    if raw is not None:
        try:
            return normalize_api_base(raw)
        except ValueError as exc:
            params.error("api_base", str(exc))
            return None
    if resolved is None:
        return None
    if resolved.default_api_base is None:
        params.error("api_base", f"required for {resolved.prefix!r} models")
        return None
    return ApiBase(resolved.default_api_base, None)


def _litellm_settings(section: Section) -> LitellmSettings:
    section.check_keys(_LITELLM_KEYS, quiet=_QUIET_LITELLM)
    return LitellmSettings(
        request_timeout=section.number("request_timeout", gt=0),
        num_retries=_or(section.integer("num_retries", ge=0), 0),
        default_fallbacks=section.aliases("default_fallbacks"),
        fallbacks=section.fallback_map("fallbacks"),
        context_window_fallbacks=section.fallback_map("context_window_fallbacks"),
        max_budget=section.number("max_budget", ge=0),
        budget_duration=section.duration("budget_duration"),
        max_end_user_budget=section.number("max_end_user_budget", ge=0),
    )


def _timeouts(
    section: Section, request_timeout: float | None, base: Timeouts | None = None
) -> Timeouts:
    section.check_keys(_TIMEOUT_KEYS)
    base = base or Timeouts()
    total = section.number("total", gt=0)
    if total is None:
        total = base.total if request_timeout is None else request_timeout
    return Timeouts(
        connect=_or(section.number("connect", gt=0), base.connect),
        first_token=_or(section.number("first_token", gt=0), base.first_token),
        idle=_or(section.number("idle", gt=0), base.idle),
        total=total,
    )


def _health(section: Section) -> HealthConfig:
    section.check_keys(_HEALTH_KEYS)
    base = HealthConfig()
    return HealthConfig(
        failure_threshold=_or(section.integer("failure_threshold", ge=1), base.failure_threshold),
        error_rate=_or(section.number("error_rate", gt=0), base.error_rate),
        window=_or(section.integer("window", ge=1), base.window),
        min_requests=_or(section.integer("min_requests", ge=1), base.min_requests),
        cooldown=_or(section.number("cooldown", gt=0), base.cooldown),
        max_cooldown=_or(section.number("max_cooldown", gt=0), base.max_cooldown),
        probe_interval=_or(section.number("probe_interval", ge=0), base.probe_interval),
        probe_timeout=_or(section.number("probe_timeout", gt=0), base.probe_timeout),
        not_pulled_recheck=_or(section.number("not_pulled_recheck", gt=0), base.not_pulled_recheck),
        panic_threshold=_or(_share(section, "panic_threshold"), base.panic_threshold),
        queue_timeout=_or(section.number("queue_timeout", ge=0), base.queue_timeout),
    )


def _share(section: Section, key: str) -> float | None:
    """A share within [0, 1]."""
    value = section.number(key, ge=0)
    if value is not None and value > 1:
        section.error(key, f"must be <= 1, got {value:g}")
        return None
    return value


def _limits(section: Section) -> Limits:
    section.check_keys(frozenset(f.name for f in _LIMIT_FIELDS))
    base = Limits()
    values: dict[str, Any] = {}
    for f in _LIMIT_FIELDS:
        default = getattr(base, f.name)
        value = (
            section.integer(f.name, gt=0)
            if isinstance(default, int)
            else section.number(f.name, gt=0)
        )
        if value is not None:
            values[f.name] = value
    return dataclasses.replace(base, **values)


def _router_settings(section: Section, timeouts: Timeouts) -> RouterSettings:
    section.check_keys(_ROUTER_KEYS, quiet=_QUIET_ROUTER)
    strategy = section.choice("routing_strategy", ROUTING_STRATEGIES)
    policies: dict[str, RetryPolicy] = {}
    for alias, policy in section.keyed_sections("model_group_retry_policy"):
        policy.check_keys(_RETRY_KEYS, quiet=_QUIET_RETRY)
        first_token = policy.number("timeout_seconds", gt=0)
        # A group's own timeouts start from the global ones; timeout_seconds is the
        # seed's "if Ollama doesn't respond in 5s", i.e. its first-token limit.
        group = _timeouts(policy.section("timeouts"), None, timeouts)
        if first_token is not None:
            group = dataclasses.replace(group, first_token=first_token)
        policies[alias] = RetryPolicy(
            timeout_seconds=first_token,
            num_retries=_or(policy.integer("num_retries", ge=0), 0),
            fallbacks=policy.aliases("fallbacks"),
            hedge_after_ms=policy.number("hedge_after_ms", gt=0),
            hedge_to_cloud=_or(policy.boolean("hedge_to_cloud"), False),
            timeouts=group if group != timeouts else None,
        )
    return RouterSettings(
        routing_strategy=_or(strategy, ROUTING_STRATEGIES[0]),
        enable_pre_call_checks=_or(section.boolean("enable_pre_call_checks"), False),
        model_group_retry_policy=policies,
        provider_budget_config=_provider_budgets(section),
    )


def _general_settings(section: Section, env: Mapping[str, str]) -> GeneralSettings:
    section.check_keys(_GENERAL_KEYS, quiet=_QUIET_GENERAL)
    return GeneralSettings(
        master_key=section.secret("master_key", env),
        database_url=section.secret("database_url", env),
        max_budget=section.number("max_budget", ge=0),
        budget_duration=section.duration("budget_duration"),
    )


def _provider_budgets(router: Section) -> dict[str, SpendCap]:
    """LiteLLM's `provider_budget_config: {openai: {budget_limit, time_period}}`."""
    outer = router.section("provider_budget_config")
    caps: dict[str, SpendCap] = {}
    for provider in outer.data:
        if not isinstance(provider, str):
            outer.findings.error(outer.path, f"expected a provider name, got {describe(provider)}")
            continue
        entry = outer.section(provider)
        entry.check_keys(frozenset({"budget_limit", "time_period"}))
        limit = entry.number("budget_limit", ge=0)
        if limit is None and entry.present:
            entry.error("budget_limit", "required")
        if limit is not None:
            caps[provider] = SpendCap(limit, entry.duration("time_period"))
    return caps


def _budget(section: Section, router: Section, env: Mapping[str, str]) -> BudgetSettings:
    """The sidecar's `budget` section, and the Redis address of router_settings / REDIS_URL."""
    section.check_keys(_BUDGET_KEYS)
    base = BudgetSettings()
    callers: dict[str, SpendCap] = {}
    for caller in section.section("callers").data:
        cap = _cap(section.section("callers"), str(caller))
        if cap is not None:
            callers[str(caller)] = cap
    return BudgetSettings(
        data_dir=section.string("data_dir"),
        ledger=_or(section.choice("ledger", ("auto", "sqlite", "redis")), base.ledger),
        redis_url=_redis_url(section, router, env),
        redis_prefix=_or(section.string("redis_prefix"), base.redis_prefix),
        on_ledger_error=_or(
            section.choice("on_ledger_error", ("fail_closed", "fail_open")), base.on_ledger_error
        ),
        callers=callers,
        default_caller=_cap(section, "default_caller"),
        refresh_interval=_or(section.number("refresh_interval", gt=0), base.refresh_interval),
        reservation_grace=_or(section.number("reservation_grace", ge=0), base.reservation_grace),
        default_answer_tokens=_or(
            section.integer("default_answer_tokens", gt=0), base.default_answer_tokens
        ),
        spend_log_queue=_or(section.integer("spend_log_queue", gt=0), base.spend_log_queue),
        spend_log_batch=_or(section.integer("spend_log_batch", gt=0), base.spend_log_batch),
        spend_log_interval=_or(section.number("spend_log_interval", gt=0), base.spend_log_interval),
    )


def _cap(parent: Section, key: str) -> SpendCap | None:
    """`{max_budget, budget_duration}` under key; None when absent or broken."""
    if parent.data.get(key) is None:
        return None
    entry = parent.section(key)
    entry.check_keys(_CAP_KEYS)
    cap = entry.number("max_budget", ge=0)
    duration = entry.duration("budget_duration")
    if cap is None:
        if entry.present:
            entry.error("max_budget", "required")
        return None
    return SpendCap(cap, duration)


def _redis_url(section: Section, router: Section, env: Mapping[str, str]) -> str | None:
    explicit = section.secret("redis_url", env) or router.secret("redis_url", env)
    if explicit is not None:
        return explicit
    host = router.secret("redis_host", env)
    if host is None:
        return env.get("REDIS_URL") or None
    port = router.data.get("redis_port", 6379)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        router.error("redis_port", f"expected a port number, got {describe(port)}")
        return None
    password = router.secret("redis_password", env)
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def _first(*values: _T | None) -> _T | None:
    return next((value for value in values if value is not None), None)


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
