"""The canonical request, response and chunk types every layer speaks.

Front doors translate their wire format into these once, where data enters;
providers translate them into one upstream protocol each. Nothing on the token
path validates them again. They are plain slotted dataclasses, so building one
per relayed chunk costs no more than the message itself.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# How callers write a yes/no flag in string-typed places (gRPC metadata, the OpenAI SDK's
# metadata), the same at every front door.
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off", ""})


def parse_flag(text: str) -> bool | None:
    """True or False for a word that spells a flag, None for any other text."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


class Locality(enum.StrEnum):
    """Where a deployment runs: on the operator's own machines, or a cloud API."""

    LOCAL = "local"
    CLOUD = "cloud"


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A tool call, or in a stream a fragment of one (accumulate by `index`)."""

    id: str = ""
    name: str = ""
    arguments: str = ""  # JSON text, the OpenAI convention
    index: int = 0


@dataclass(slots=True, frozen=True)
class ThinkingBlock:
    """A model's reasoning as the provider signed it, to be sent back unchanged.

    Anthropic refuses the next turn of a tool loop unless the assistant turn carries
    its thinking blocks exactly as they came: `thinking` with its `signature`, or a
    `redacted` block's opaque data. Nothing here is ever rewritten or trimmed.
    """

    thinking: str = ""
    signature: str = ""
    redacted: str = ""  # the data of a redacted_thinking block; then thinking is ""


@dataclass(slots=True, frozen=True)
class Message:
    role: str
    content: str = ""
    name: str = ""
    tool_call_id: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    images: tuple[str, ...] = ()
    # An assistant turn's thinking blocks, in the order the model gave them.
    thinking: tuple[ThinkingBlock, ...] = ()


@dataclass(slots=True, frozen=True)
class GenerationParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(slots=True, frozen=True)
class RoutingHints:
    local_only: bool = False
    no_fallback: bool = False


# The `extra` key under which a front door that speaks Anthropic's protocol passes the
# prompt-cache breakpoints its caller set on system and message blocks, for Claude alone:
# a list of [message index, cache_control]. It carries markers only, never text, so
# nothing reaches an upstream through it unseen by the privacy rules.
CACHE_BREAKPOINTS = "cache_breakpoints"


@dataclass(slots=True, frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    params: GenerationParams = GenerationParams()
    # JSON passthrough: tools, tool_choice, response_format, provider extras.
    extra: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    hints: RoutingHints = RoutingHints()
    request_id: str = ""
    # A legacy text completion (/v1/completions): the one user message is the raw prompt.
    # A provider whose upstream completes text (OpenAI-compatible /completions, Ollama's
    # /api/generate) sends it as a prompt; any other answers it as a chat turn.
    completion: bool = False


@dataclass(slots=True, frozen=True)
class Usage:
    """Token counts; None means the upstream did not report that count."""

    prompt_tokens: int | None = None  # all of the prompt, cached tokens included
    completion_tokens: int | None = None
    # Prompt tokens read from the provider's prompt cache, part of prompt_tokens (OpenAI's
    # convention), billed at the cached rate.
    cached_tokens: int | None = None
    # Prompt tokens written to the provider's prompt cache (Anthropic's
    # cache_creation_input_tokens), also part of prompt_tokens.
    cache_write_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class RouteTaken:
    """Which deployment answered a call, reported once per call."""

    deployment: str
    model_group: str
    provider: str
    upstream_model: str
    locality: Locality
    attempts: int
    request_id: str
    # How the request was served when not in its own kind: "chat" for a text completion
    # answered as a chat turn by a deployment with no completions endpoint.
    translated: str = ""


@dataclass(slots=True)
class Chunk:
    """One relayed piece of an answer.

    A provider may merge several upstream frames that were already buffered into
    one chunk; that is how the relay coalesces tokens under load without ever
    holding a lone token back.
    """

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    # The model's reasoning text as it streams, and each thinking block once it is
    # complete (signed); empty for models and providers that do not think aloud.
    reasoning: str = ""
    thinking: tuple[ThinkingBlock, ...] = ()
    # Set by the engine on the first chunk of a call only.
    route: RouteTaken | None = None


@dataclass(slots=True, frozen=True)
class ChatResponse:
    content: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: Usage
    route: RouteTaken
    reasoning: str = ""
    thinking: tuple[ThinkingBlock, ...] = ()


def merge_tool_calls(fragments: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    """Accumulate streamed tool-call fragments by index into whole calls."""
    merged: dict[int, ToolCall] = {}
    for fragment in fragments:
        previous = merged.get(fragment.index)
        if previous is None:
            merged[fragment.index] = fragment
        else:
            merged[fragment.index] = ToolCall(
                id=previous.id or fragment.id,
                name=previous.name or fragment.name,
                arguments=previous.arguments + fragment.arguments,
                index=fragment.index,
            )
    return tuple(merged[i] for i in sorted(merged))


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """What health tracking knows of one deployment right now."""

    state: str  # up | cold | cooling | half_open | not_pulled
    reason: str
    in_flight: int
    ttft_ms: float | None  # moving average; None before the first answer
    cooldown_seconds: float
    last_error: str
    # Health-probe endpoints the server does not offer (404/405/501), no longer asked.
    probes_not_offered: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    id: str
    provider: str
    upstream_model: str
    locality: Locality
    api_base: str
    context_window: int | None
    simulated: bool
    health: HealthStatus | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One alias as front doors list it: its deployments and how each is doing."""

    name: str
    description: str
    deployments: tuple[DeploymentStatus, ...]
    # For an alias resolved per request (auto), with no deployments of its own: the
    # aliases it routes to.
    via: tuple[ModelStatus, ...] = ()

    @property
    def locality(self) -> str:
        """ "local", "cloud", or "mixed" when the alias reaches deployments of both kinds."""
        kinds = {d.locality for d in self._reached()}
        if len(kinds) == 1:
            return next(iter(kinds)).value
        return "mixed" if kinds else "unknown"

    @property
    def simulated(self) -> bool:
        return any(d.simulated for d in self._reached())

    def _reached(self) -> tuple[DeploymentStatus, ...]:
        return self.deployments + tuple(d for model in self.via for d in model.deployments)


@dataclass(frozen=True, slots=True)
class SpendRecord:
    """One call as the spend log keeps it: who, where, how much. Never the prompt text."""

    request_id: str
    start_time: float  # unix seconds
    end_time: float
    caller: str
    model_group: str  # the alias the caller asked for (or auto routing chose)
    model: str  # the upstream model of the deployment that answered; "" when none did
    deployment: str
    provider: str
    locality: str  # local | cloud | "" when no deployment answered
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: float  # USD, every attempt of the call included
    ttft_ms: float | None
    latency_ms: float
    status: str  # ok | error | cancelled
    attempts: int
    fallbacks: int  # attempts beyond the first
    route_reason: str


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One spend cap in its current window."""

    budget: str  # e.g. "global", "model_group:cloud-strong", "caller:billing"
    cap: float  # USD
    spent: float
    reserved: float  # held by calls in flight
    duration: str | None  # LiteLLM duration; None: never resets
    window_start: float | None  # unix seconds
    resets_at: float | None

    @property
    def remaining(self) -> float:
        return max(0.0, self.cap - self.spent - self.reserved)


@dataclass(frozen=True, slots=True)
class SpendQuery:
    """Filters of a spend report; times are unix seconds, `end` exclusive."""

    request_id: str = ""
    caller: str = ""
    model: str = ""  # matches the model group or the upstream model
    start: float | None = None
    end: float | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DailySpend:
    date: str  # YYYY-MM-DD, UTC
    model_group: str
    model: str
    caller: str
    spend: float
    prompt_tokens: int
    completion_tokens: int
    requests: int


@dataclass(frozen=True, slots=True)
class SpendReport:
    rows: tuple[SpendRecord, ...]  # newest first, at most the query's limit
    daily: tuple[DailySpend, ...]  # by day, model and caller, oldest first
    budgets: tuple[BudgetStatus, ...]


# -- operations: what a running process says about itself (`llm-sidecar status`) ----------


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One serving process: its version, the configuration it serves, its reloads."""

    version: str
    config_hash: str  # sha256 of the configuration file's bytes, hex
    config_loaded_at: float  # unix seconds
    workers: int  # processes sharing the ports (serve --workers)
    pid: int
    reloads_applied: int = 0
    reloads_rejected: int = 0
    last_reload_error: str = ""
    draining: bool = False


# -- embeddings ---------------------------------------------------------------------------
#
# An embedding call goes through the same plan as a chat (aliases, groups, fallbacks,
# health, budgets, the privacy rule at the egress), with its own request and answer.


@dataclass(slots=True, frozen=True)
class EmbeddingRequest:
    """Texts to embed in one batch, in order; an input may be token ids instead of text.

    Token ids cannot be read by the privacy detector, so a request holding any is
    planned as sensitive: only a local deployment embeds it.
    """

    model: str
    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int | None = None  # a shorter vector, for models that can give one
    metadata: dict[str, str] = field(default_factory=dict)
    hints: RoutingHints = RoutingHints()
    request_id: str = ""

    @property
    def texts(self) -> tuple[str, ...]:
        """The inputs that are text (token-id inputs left out)."""
        return tuple(item for item in self.inputs if isinstance(item, str))

    @property
    def has_tokens(self) -> bool:
        return any(not isinstance(item, str) for item in self.inputs)


@dataclass(slots=True, frozen=True)
class Embeddings:
    """What a provider answered: one vector per input, in the inputs' order."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage


@dataclass(slots=True, frozen=True)
class EmbeddingResponse:
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    route: RouteTaken
