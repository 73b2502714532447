"""The resolved configuration: plain frozen data, validated once when loaded.

The YAML follows the LiteLLM proxy schema (model_list, litellm_settings,
router_settings, general_settings); the sidecar's own additions live in their
own sections (timeouts, routing_rules, privacy). `loader.py` turns raw YAML into
these objects; everything else only reads them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.types import Locality


class ProviderKind(enum.StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase limits in seconds; each is also capped by the caller's deadline."""

    connect: float = 5.0
    first_token: float = 60.0
    idle: float = 30.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream model behind an alias; several may share one alias."""

    id: str  # "<model_name>/<index within the group>", e.g. "fast-local/0"
    model_group: str
    provider: ProviderKind
    upstream_model: str  # the model name sent upstream, prefix removed
    api_base: str  # never carries credentials: those are split off into api_auth
    api_key: str | None = field(default=None, repr=False)
    # (user, password) from an api_base written as https://user:pass@host, sent as HTTP
    # Basic auth on requests that carry no Authorization header of their own.
    api_auth: tuple[str, str] | None = field(default=None, repr=False)
    locality: Locality = Locality.LOCAL
    # Tokens the model can hold (prompt + output); None when unknown.
    context_window: int | None = None
    # The window was asked of the upstream at start-up rather than configured.
    discovered_window: bool = False
    # Default output cap (litellm_params.max_tokens), used when a request sets none.
    max_output_tokens: int | None = None
    timeouts: Timeouts = Timeouts()
    weight: float = 1.0
    max_parallel_requests: int | None = None
    # Remaining litellm_params passed to the upstream (keep_alive, num_ctx, ...).
    extra_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    # Served by a built-in simulator in place of the configured backend.
    simulated: bool = False
    # Rate limits the upstream enforces (litellm_params.rpm / tpm), per minute.
    rpm: int | None = None
    tpm: int | None = None
    # Spend cap of the deployment's model group (model_info, as the seed writes it).
    max_budget: float | None = None
    budget_duration: str | None = None  # e.g. "30d", validated by the loader
    # Custom pricing in USD per token; None means use the provider's list price.
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    # Price of prompt tokens read from the provider's cache (LiteLLM's name).
    cache_read_input_token_cost: float | None = None
    # Spend cap of this deployment alone (litellm_params.max_budget, LiteLLM's "model budget").
    deployment_max_budget: float | None = None
    deployment_budget_duration: str | None = None
    # The model the price table knows this one as (model_info.base_model).
    base_model: str | None = None
    # model_info.free: a cloud deployment that costs nothing (no price needed).
    free: bool = False
    # model_info.supports_function_calling (LiteLLM's name): false for a model that cannot
    # call tools, which routing then keeps requests with tools away from.
    supports_tools: bool = True

    @property
    def secrets(self) -> tuple[str, ...]:
        """The credentials this deployment sends upstream, for redaction."""
        found = [self.api_key] if self.api_key else []
        if self.api_auth is not None:
            found += [part for part in self.api_auth if part]
        return tuple(found)


@dataclass(frozen=True, slots=True)
class ModelGroup:
    name: str
    deployments: tuple[Deployment, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per-group resilience settings (`router_settings.model_group_retry_policy`)."""

    timeout_seconds: float | None = None  # first-token timeout of the group's deployments
    num_retries: int = 0
    fallbacks: tuple[str, ...] = ()
    # Start the next candidate too when no first token came after this long.
    hedge_after_ms: float | None = None
    # Hedges stay local unless this is set.
    hedge_to_cloud: bool = False
    # The group's timeouts when they differ from the global ones.
    timeouts: Timeouts | None = None


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Passive and active health tracking (the sidecar's own `health` section)."""

    failure_threshold: int = 3  # consecutive failures that start a cooldown
    error_rate: float = 0.5  # or this share of failures over the window
    window: int = 20
    min_requests: int = 10  # attempts in the window before the error rate counts
    cooldown: float = 5.0  # first cooldown, seconds; doubles on each relapse
    max_cooldown: float = 60.0
    probe_interval: float = 10.0  # active probes; 0 turns them off
    probe_timeout: float = 2.0
    # How soon a deployment whose model is not pulled is looked at again.
    not_pulled_recheck: float = 5.0
    # When fewer than this share of a plan's deployments look healthy, the plan tries
    # the unhealthy ones too rather than failing untried (Envoy's panic threshold);
    # 0 turns it off.
    panic_threshold: float = 0.5
    # How long a request waits for a slot on a deployment at max_parallel_requests
    # when no other candidate is left to spill to.
    queue_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What any one caller or upstream may use (the sidecar's own `limits` section).

    The HTTP door's limits apply before authentication, so that a caller without a key
    cannot hold resources either; the gRPC door's are set on the gRPC server.
    """

    # The whole of a unary answer, text and tool calls (a tool-call fragment counts at
    # least 64): past it the call fails rather than grow without bound.
    max_answer_chars: int = 4 * 1024 * 1024
    # HTTP: open connections; one more is answered 503 and closed.
    http_max_connections: int = 2048
    # HTTP: seconds to send a request's line and headers (from connecting, or from the
    # first byte of a later request on a kept-alive connection).
    http_header_timeout: float = 10.0
    # HTTP: seconds to send the whole body once the headers are in.
    http_body_timeout: float = 60.0
    # HTTP: seconds an idle kept-alive connection stays open. Longer than clients keep
    # idle connections (httpx: 5 s), so the client closes first and never sends a
    # request down a connection the server is closing at that moment.
    http_keep_alive: int = 65
    # HTTP: bytes of request line and headers together, and the number of headers.
    http_max_header_bytes: int = 64 * 1024
    http_max_headers: int = 100
    # gRPC: calls in flight at once; one more is answered RESOURCE_EXHAUSTED.
    grpc_max_concurrent_rpcs: int = 4096
    # gRPC: HTTP/2 streams one connection may have open.
    grpc_max_concurrent_streams: int = 1024
    # gRPC: seconds a connection with no call in flight stays open.
    grpc_max_connection_idle: float = 300.0
    # gRPC: the shortest interval between a client's keep-alive pings that is tolerated;
    # a client pinging more often is disconnected.
    grpc_min_ping_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """Metrics and traces (the sidecar's own `telemetry` section); the OTLP exporters
    also read the standard OTEL_EXPORTER_OTLP_* environment variables."""

    console_interval: float = 0.0  # seconds between exports to stdout; 0 turns it off
    metrics: bool = True  # keep metrics (GET /metrics, OTLP when configured)
    # auto: OTLP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, else none | otlp | console
    # | record (spans made, exported nowhere)
    traces: str = "auto"
    export_interval: float = 60.0  # seconds between OTLP metric exports
    metrics_open: bool = False  # GET /metrics without the master key


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The process's log (the sidecar's own `logging` section)."""

    level: str = "INFO"
    format: str = "text"  # text | json | auto (text on a terminal, JSON otherwise)
    # One line per call on the llm_sidecar.calls logger; auto: when the format is JSON.
    call_log: str = "auto"
    include_prompts: bool = False  # a redacted prompt preview in the call log


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Shadow sampling of locally served calls (the `quality_monitoring` section)."""

    compare_with: str | None = None  # the alias answers are compared with; None: off
    sample_rate: float = 0.01
    log_path: str = "quality_log.jsonl"
    max_concurrency: int = 2  # shadow calls in flight at once
    max_queue: int = 100  # sampled calls waiting; more are dropped, never waited for
    judge: str | None = None  # alias asked for blind pairwise verdicts by the report
    preview_chars: int = 2000  # how much of the prompt and of each answer is kept
    max_log_mb: float = 100.0  # past this the log takes no more pairs


@dataclass(frozen=True, slots=True)
class LitellmSettings:
    request_timeout: float | None = None
    default_fallbacks: tuple[str, ...] = ()
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    context_window_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    num_retries: int = 0
    # LiteLLM's own spelling of the proxy-wide cap, and its cap for each end user.
    max_budget: float | None = None
    budget_duration: str | None = None
    max_end_user_budget: float | None = None


@dataclass(frozen=True, slots=True)
class SpendCap:
    """A cap in USD, reset every `duration` (LiteLLM's grammar), or never when None."""

    max_budget: float
    duration: str | None = None


@dataclass(frozen=True, slots=True)
class RouterSettings:
    routing_strategy: str = "simple-shuffle"
    enable_pre_call_checks: bool = False
    model_group_retry_policy: Mapping[str, RetryPolicy] = field(default_factory=dict)
    # Spend caps per provider (openai, anthropic, ...), for its cloud deployments.
    provider_budget_config: Mapping[str, SpendCap] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Where spend is kept and how the ledger behaves (the sidecar's own `budget` section)."""

    # SQLite ledger and spend log; None: the process decides (a directory, or memory).
    data_dir: str | None = None
    ledger: str = "auto"  # auto (redis when an address is configured) | sqlite | redis
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "llm-sidecar"
    # What a cloud call does when the ledger cannot be reached: refused (closed) or let
    # through unmetered (open).
    on_ledger_error: str = "fail_closed"
    # Caps per caller id, and the cap of every caller not listed.
    callers: Mapping[str, SpendCap] = field(default_factory=dict)
    default_caller: SpendCap | None = None
    # Seconds between refreshes of what other sidecars spent, for planning.
    refresh_interval: float = 1.0
    # Seconds past a call's total time limit after which an unsettled reservation (its
    # sidecar died) is settled at its worst case.
    reservation_grace: float = 30.0
    # Answer room reserved (and sent upstream as max_tokens) when nothing else bounds it.
    default_answer_tokens: int = 4096
    spend_log_queue: int = 10_000
    spend_log_batch: int = 500
    spend_log_interval: float = 0.2


@dataclass(frozen=True, slots=True)
class GeneralSettings:
    master_key: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    max_budget: float | None = None
    budget_duration: str | None = None


@dataclass(frozen=True, slots=True)
class FrontDoors:
    """The optional front doors `serve` opens besides gRPC and the OpenAI-compatible HTTP
    bridge (the `front_doors` section); `serve --ollama-port` overrides it."""

    # Ollama's own API on this port (11434 is Ollama's, which its tools expect); None: off.
    ollama_port: int | None = None


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    groups: Mapping[str, ModelGroup]
    litellm_settings: LitellmSettings = LitellmSettings()
    router_settings: RouterSettings = RouterSettings()
    general_settings: GeneralSettings = GeneralSettings()
    timeouts: Timeouts = Timeouts()
    health: HealthConfig = HealthConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    logging: LoggingConfig = LoggingConfig()
    quality: QualityConfig = QualityConfig()
    budget: BudgetSettings = BudgetSettings()
    limits: Limits = Limits()
    front_doors: FrontDoors = FrontDoors()
    # Kept raw here: routing validates and compiles them (`compile_routing`), which needs
    # the model groups above and so cannot run inside this module.
    routing_rules: Mapping[str, Any] = field(default_factory=dict)
    privacy: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    # Non-fatal findings (unknown keys, unresolved secrets), for logs and check-config.
    warnings: tuple[str, ...] = ()

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(d for g in self.groups.values() for d in g.deployments)

    def with_deployments(self, replaced: Mapping[str, Deployment]) -> SidecarConfig:
        """This configuration with the deployments whose ids are keys of `replaced` swapped."""
        if not replaced:
            return self
        groups = {
            name: dataclasses.replace(
                group, deployments=tuple(replaced.get(d.id, d) for d in group.deployments)
            )
            for name, group in self.groups.items()
        }
        return dataclasses.replace(self, groups=groups)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential in the configuration, for redaction wherever text is shown."""
        found = [secret for d in self.deployments for secret in d.secrets]
        general = self.general_settings
        found += [s for s in (general.master_key, general.database_url) if s]
        return tuple(dict.fromkeys(found))
