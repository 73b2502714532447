"""Per-call metrics through OpenTelemetry, recorded once a call ends, never per token.

Every name, unit and label is listed in docs/metrics.md (a test checks the list
against what is exported). Labels are bounded: configured aliases and
deployments, fixed outcome and token-type words; never request ids, callers'
keys or prompts. A model name a caller sent that matches no alias is recorded
as `_OTHER`.

The gauges (in flight, health, budget remaining) are read when the metrics
are read, from callbacks the engine registers: nothing on the call path. The
aggregation itself is sidecar/telemetry/aggregate.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sidecar.telemetry.aggregate import Aggregates, Reading
from sidecar.telemetry.report import CallReport

# GenAI's advisory boundaries (semantic conventions, gen_ai.client.operation.duration).
SECONDS_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# The sidecar's own overhead is counted in microseconds to milliseconds.
OVERHEAD_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
)  # fmt: skip
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))  # 1 ... 67108864

# Health states as gauge values: 0 serves normally, higher is worse.
HEALTH_VALUES: Final = {"up": 0, "cold": 1, "half_open": 2, "cooling": 3, "not_pulled": 4}
OTHER: Final = "_OTHER"

_PLACE: Final = ("model_group", "deployment", "locality")
_WHERE: Final = ("model_group", "deployment")
_GROUP: Final = ("model_group",)
_GENAI: Final = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "error.type",
)


class CallMetrics:
    """The instruments, and how one CallReport lands on them (about 10 dict updates)."""

    def __init__(self, metrics: Aggregates, known_models: Callable[[str], bool]) -> None:
        self._known = known_models
        counter, histogram = metrics.counter, metrics.histogram
        self.calls = counter(
            "llm_sidecar.calls", "{call}", "Chat calls, by how they ended", (*_PLACE, "outcome")
        )
        self.duration = histogram(
            "llm_sidecar.call.duration",
            "s",
            "Time from a call's arrival to its end",
            (*_PLACE, "outcome"),
            SECONDS_BUCKETS,
        )
        self.ttft = histogram(
            "llm_sidecar.time_to_first_token",
            "s",
            "Time from sending the request upstream to its first token",
            _WHERE,
            SECONDS_BUCKETS,
        )
        self.tokens = counter(
            "llm_sidecar.tokens",
            "{token}",
            "Tokens, by type: input, output, cached",
            (*_PLACE, "type"),
        )
        self.cost = counter(
            "llm_sidecar.cost", "USD", "What answered calls cost", (*_WHERE, "provider")
        )
        self.fallbacks = counter(
            "llm_sidecar.fallbacks",
            "{call}",
            "Calls answered by a candidate after the first",
            _WHERE,
        )
        self.retries = counter(
            "llm_sidecar.retries",
            "{attempt}",
            "Further attempts on the model group asked for",
            _GROUP,
        )
        self.hedges_started = counter(
            "llm_sidecar.hedges.started", "{attempt}", "Attempts started as hedges", _GROUP
        )
        self.hedges_won = counter(
            "llm_sidecar.hedges.won", "{call}", "Calls answered by a hedge", _WHERE
        )
        self.privacy_refusals = counter(
            "llm_sidecar.privacy.refusals",
            "{call}",
            "Calls held back because they were sensitive and no local deployment could serve",
            _GROUP,
        )
        self.budget_refusals = counter(
            "llm_sidecar.budget.refusals", "{call}", "Calls a spend cap turned away", _GROUP
        )
        self.overhead = histogram(
            "llm_sidecar.overhead.before_upstream",
            "s",
            "Sidecar time from a call's arrival to sending it to the deployment that answered",
            _WHERE,
            OVERHEAD_BUCKETS,
        )
        self.relay_overhead = histogram(
            "llm_sidecar.overhead.relay",
            "s",
            "Time the relay held an answer beyond waiting on the upstream",
            _WHERE,
            OVERHEAD_BUCKETS,
        )
        # The GenAI semantic conventions' client metrics, for dashboards built on them.
        self.genai_duration = histogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration",
            _GENAI,
            SECONDS_BUCKETS,
        )
        self.genai_tokens = histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per call",
            (*_GENAI[:4], "gen_ai.token.type"),
            TOKEN_BUCKETS,
        )

    def record(self, report: CallReport) -> None:
        route = report.route
        model = report.model if self._known(report.model) else OTHER
        outcome = report.outcome
        if route is None:
            self.calls.add(1, (model, "", "", outcome))
            self.duration.record(report.duration, (model, "", "", outcome))
        else:
            where = (route.model_group, route.deployment)
            place = (*where, route.locality.value)
            self.calls.add(1, (*place, outcome))
            self.duration.record(report.duration, (*place, outcome))
            if report.ttft is not None:
                self.ttft.record(report.ttft, where)
            if report.attempts > 1:
                self.fallbacks.add(1, where)
            if report.hedge_won:
                self.hedges_won.add(1, where)
            usage = report.usage
            if usage is not None:
                if usage.prompt_tokens:
                    self.tokens.add(usage.prompt_tokens, (*place, "input"))
                if usage.completion_tokens:
                    self.tokens.add(usage.completion_tokens, (*place, "output"))
                if usage.cached_tokens:
                    self.tokens.add(usage.cached_tokens, (*place, "cached"))
            if report.cost:
                self.cost.add(report.cost, (*where, route.provider))
            if report.overhead is not None:
                self.overhead.record(report.overhead, where)
            if report.relay_overhead is not None:
                self.relay_overhead.record(report.relay_overhead, where)
        # What happened on the way to an answer counts for the alias asked for.
        if report.retries:
            self.retries.add(report.retries, (model,))
        if report.hedges:
            self.hedges_started.add(report.hedges, (model,))
        if report.privacy_refused:
            self.privacy_refusals.add(1, (model,))
        if report.budget_refused and outcome != "ok":
            self.budget_refusals.add(1, (model,))
        self._genai(report, model)

    def _genai(self, report: CallReport, model: str) -> None:
        route = report.route
        provider = "" if route is None else provider_name(route.provider)
        answered = "" if route is None else route.upstream_model
        self.genai_duration.record(
            report.duration,
            (report.operation, provider, model, answered, report.error_type or ""),
        )
        usage = report.usage
        if usage is None or route is None:
            return
        labels = (report.operation, provider, model, answered)
        if usage.prompt_tokens is not None:
            self.genai_tokens.record(usage.prompt_tokens, (*labels, "input"))
        if usage.completion_tokens is not None:
            self.genai_tokens.record(usage.completion_tokens, (*labels, "output"))


def observe_gauges(
    metrics: Aggregates, in_flight: Reading, health: Reading, budget_remaining: Reading
) -> None:
    """The gauges, each read from its callback whenever the metrics are read."""
    metrics.gauge(
        "llm_sidecar.in_flight", "{request}", "Requests in flight to each deployment", in_flight
    )
    metrics.gauge(
        "llm_sidecar.health.state",
        "1",
        "Each deployment's health: 0 up, 1 cold, 2 half open, 3 cooling down, 4 not pulled",
        health,
    )
    metrics.gauge(
        "llm_sidecar.budget.remaining",
        "USD",
        "What is left on each configured spend cap in its current window",
        budget_remaining,
    )


# gen_ai.provider.name's well-known values, for the providers whose name differs.
_PROVIDER_NAMES: Final = {"gemini": "gcp.gemini"}


def provider_name(provider: str) -> str:
    return _PROVIDER_NAMES.get(provider, provider)
