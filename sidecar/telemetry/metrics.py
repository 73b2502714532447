"""Per-call metrics through OpenTelemetry, recorded once a call ends, never per token.

Every name, unit and label is listed in docs/metrics.md (a test checks the list
against what is exported). Labels are bounded: configured aliases and
deployments, fixed outcome and token-type words; never request ids, callers'
keys or prompts. A model name a caller sent that matches no alias is recorded
as `_OTHER`.

The gauges (in flight, health, budget remaining) are read when a reader
collects, from callbacks the engine registers: nothing on the call path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

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

Labels = dict[str, str]
Reading = Callable[[], Iterable[tuple[Labels, float]]]


class CallMetrics:
    """The instruments, and how one CallReport lands on them."""

    def __init__(self, meter: Meter, known_models: Callable[[str], bool]) -> None:
        self._known = known_models
        counter, histogram = meter.create_counter, meter.create_histogram
        self.calls = counter("llm_sidecar.calls", "{call}", "Chat calls, by how they ended")
        self.duration = histogram(
            "llm_sidecar.call.duration",
            "s",
            "Time from a call's arrival to its end",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.ttft = histogram(
            "llm_sidecar.time_to_first_token",
            "s",
            "Time from sending the request upstream to its first token",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.tokens = counter(
            "llm_sidecar.tokens", "{token}", "Tokens, by type: input, output, cached"
        )
        self.cost = counter("llm_sidecar.cost", "USD", "What answered calls cost")
        self.fallbacks = counter(
            "llm_sidecar.fallbacks", "{call}", "Calls answered by a candidate after the first"
        )
        self.retries = counter(
            "llm_sidecar.retries", "{attempt}", "Further attempts on the model group asked for"
        )
        self.hedges_started = counter(
            "llm_sidecar.hedges.started", "{attempt}", "Attempts started as hedges"
        )
        self.hedges_won = counter("llm_sidecar.hedges.won", "{call}", "Calls answered by a hedge")
        self.privacy_refusals = counter(
            "llm_sidecar.privacy.refusals",
            "{call}",
            "Calls held back because they were sensitive and no local deployment could serve",
        )
        self.budget_refusals = counter(
            "llm_sidecar.budget.refusals", "{call}", "Calls a spend cap turned away"
        )
        self.overhead = histogram(
            "llm_sidecar.overhead.before_upstream",
            "s",
            "Sidecar time from a call's arrival to sending it to the deployment that answered",
            explicit_bucket_boundaries_advisory=OVERHEAD_BUCKETS,
        )
        self.relay_overhead = histogram(
            "llm_sidecar.overhead.relay",
            "s",
            "Time the relay held an answer beyond waiting on the upstream",
            explicit_bucket_boundaries_advisory=OVERHEAD_BUCKETS,
        )
        # The GenAI semantic conventions' client metrics, for dashboards built on them.
        self.genai_duration = histogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.genai_tokens = histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per call",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )

    def record(self, report: CallReport) -> None:
        route = report.route
        model = report.model if self._known(report.model) else OTHER
        if route is None:
            where: Labels = {"model_group": model}
            self.calls.add(1, {**where, "outcome": report.outcome})
            self.duration.record(report.duration, {**where, "outcome": report.outcome})
        else:
            where = {"model_group": route.model_group, "deployment": route.deployment}
            place = {**where, "locality": route.locality.value}
            self.calls.add(1, {**place, "outcome": report.outcome})
            self.duration.record(report.duration, {**place, "outcome": report.outcome})
            if report.ttft is not None:
                self.ttft.record(report.ttft, where)
            if report.attempts > 1:
                self.fallbacks.add(1, where)
            if report.hedge_won:
                self.hedges_won.add(1, where)
            self._usage(report, place)
            if report.cost:
                self.cost.add(report.cost, {**where, "provider": route.provider})
            if report.overhead is not None:
                self.overhead.record(report.overhead, where)
            if report.relay_overhead is not None:
                self.relay_overhead.record(report.relay_overhead, where)
        group = {"model_group": route.model_group if route is not None else model}
        if report.retries:
            self.retries.add(report.retries, group)
        if report.hedges:
            self.hedges_started.add(report.hedges, group)
        if report.privacy_refused:
            self.privacy_refusals.add(1, group)
        if report.budget_refused and report.outcome != "ok":
            self.budget_refusals.add(1, group)
        self._genai(report, model)

    def _usage(self, report: CallReport, place: Labels) -> None:
        usage = report.usage
        if usage is None:
            return
        for kind, count in (
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
            ("cached", usage.cached_tokens),
        ):
            if count:
                self.tokens.add(count, {**place, "type": kind})

    def _genai(self, report: CallReport, model: str) -> None:
        route = report.route
        labels: Labels = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        if route is not None:
            labels["gen_ai.provider.name"] = provider_name(route.provider)
            labels["gen_ai.response.model"] = route.upstream_model
        if report.error_type is not None:
            labels["error.type"] = report.error_type
        self.genai_duration.record(report.duration, labels)
        usage = report.usage
        if usage is None or route is None:
            return
        if usage.prompt_tokens is not None:
            self.genai_tokens.record(usage.prompt_tokens, {**labels, "gen_ai.token.type": "input"})
        if usage.completion_tokens is not None:
            self.genai_tokens.record(
                usage.completion_tokens, {**labels, "gen_ai.token.type": "output"}
            )


def observe_gauges(
    meter: Meter, in_flight: Reading, health: Reading, budget_remaining: Reading
) -> None:
    """The gauges, each read from its callback whenever a reader collects."""

    def gauge(reading: Reading) -> Callable[[CallbackOptions], Sequence[Observation]]:
        def observe(options: CallbackOptions) -> Sequence[Observation]:
            return [Observation(value, labels) for labels, value in reading()]

        return observe

    meter.create_observable_gauge(
        "llm_sidecar.in_flight",
        [gauge(in_flight)],
        "{request}",
        "Requests in flight to each deployment",
    )
    meter.create_observable_gauge(
        "llm_sidecar.health.state",
        [gauge(health)],
        "1",
        "Each deployment's health: 0 up, 1 cold, 2 half open, 3 cooling down, 4 not pulled",
    )
    meter.create_observable_gauge(
        "llm_sidecar.budget.remaining",
        [gauge(budget_remaining)],
        "USD",
        "What is left on each configured spend cap in its current window",
    )


# gen_ai.provider.name's well-known values, for the providers whose name differs.
_PROVIDER_NAMES: Final = {"gemini": "gcp.gemini"}


def provider_name(provider: str) -> str:
    return _PROVIDER_NAMES.get(provider, provider)
