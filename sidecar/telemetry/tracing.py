"""Spans for calls, in the OpenTelemetry GenAI semantic conventions.

One span per call (`chat {alias}`, kind SERVER: the sidecar serving its caller)
with the GenAI attributes and the route, and one child span per upstream
attempt (`chat {upstream model}`, kind CLIENT), which is the span the
upstream's `traceparent` header names. Spans are opened and closed at call
granularity only; nothing happens per token. With tracing off there is no
tracer at all, so no span object is ever created.

Attribute names are those of the GenAI conventions after their move to the
semantic-conventions-genai repository (`gen_ai.provider.name`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.cache_read.input_tokens`,
`gen_ai.usage.cache_write.input_tokens`, `gen_ai.response.time_to_first_chunk`).
`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai/dup` adds the names of v1.36 and before
beside them (`gen_ai.system`, `gen_ai.usage.prompt_tokens`,
`gen_ai.usage.completion_tokens`, `gen_ai.usage.cache_creation.input_tokens`)
for back ends that still read those; `gen_ai_latest_experimental` is accepted
and is the default.

The SDK's span machinery costs a few hundred microseconds per call on a busy
machine; OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (read by the SDK, e.g.
parentbased_traceidratio with 0.1) trace a share of the calls, and a call that
is not sampled skips building its attributes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Final
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from sidecar import __version__
from sidecar.config.model import Deployment
from sidecar.telemetry.metrics import provider_name
from sidecar.telemetry.report import CallReport
from sidecar.types import ChatRequest

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"
_DUP: Final = "gen_ai/dup"


def legacy_names_wanted(opt_in: str | None) -> bool:
    """Whether OTEL_SEMCONV_STABILITY_OPT_IN asks for the older GenAI names as well."""
    return _DUP in {part.strip() for part in (opt_in or "").split(",")}


class CallTracer:
    def __init__(self, provider: TracerProvider, *, legacy_names: bool = False) -> None:
        self._tracer = provider.get_tracer("llm_sidecar", __version__, schema_url=SCHEMA_URL)
        self._legacy = legacy_names

    def start_call(self, request: ChatRequest, start_ns: int | None = None) -> Span:
        """The call's span, a child of whatever trace context is current (continued from
        the caller's traceparent by the front door)."""
        attributes: dict[str, str | bool | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request.model,
        }
        params = request.params
        if params.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = params.max_tokens
        if request.request_id:
            attributes["llm_sidecar.request_id"] = request.request_id
        return self._tracer.start_span(
            f"chat {request.model}", kind=SpanKind.SERVER, attributes=attributes,
            start_time=start_ns,
        )  # fmt: skip

    def start_attempt(self, call: Span, deployment: Deployment, number: int) -> Span:
        if not call.is_recording():
            # Sampled out: the attempt is too, but its context still goes upstream.
            return self._tracer.start_span("attempt", context=trace.set_span_in_context(call))
        provider = provider_name(deployment.provider.value)
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": deployment.upstream_model,
            "llm_sidecar.deployment": deployment.id,
            "llm_sidecar.locality": deployment.locality.value,
            "llm_sidecar.attempt": number,
        }
        if self._legacy:
            attributes["gen_ai.system"] = provider
        address = urlsplit(deployment.api_base)
        host, port = address.hostname, address.port
        if host:
            attributes["server.address"] = host
            if port:
                attributes["server.port"] = port
        return self._tracer.start_span(
            f"chat {deployment.upstream_model}",
            context=trace.set_span_in_context(call),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def end_call(self, span: Span, report: CallReport, end_ns: int | None = None) -> None:
        if not span.is_recording():  # sampled out (OTEL_TRACES_SAMPLER): nothing to add
            span.end(end_time=end_ns)
            return
        route = report.route
        attrs: dict[str, str | bool | int | float | list[str]] = {
            "gen_ai.request.stream": report.streaming,
            "llm_sidecar.outcome": report.outcome,
            "llm_sidecar.route.attempts": report.attempts,
            "llm_sidecar.route.fallbacks": report.fallbacks,
            "llm_sidecar.route.retries": report.retries,
            "llm_sidecar.route.hedges": report.hedges,
            "llm_sidecar.privacy.sensitive": report.sensitive,
            "llm_sidecar.budget.verdict": "refused" if report.budget_refused else "ok",
            "llm_sidecar.cost_usd": report.cost,
        }
        if report.privacy_refused:
            attrs["llm_sidecar.privacy.verdict"] = "refused"
        if route is not None:
            provider = provider_name(route.provider)
            attrs.update(
                {
                    "gen_ai.provider.name": provider,
                    "gen_ai.response.model": route.upstream_model,
                    "llm_sidecar.route.deployment": route.deployment,
                    "llm_sidecar.route.model_group": route.model_group,
                    "llm_sidecar.route.locality": route.locality.value,
                    "llm_sidecar.route.reason": report.reason,
                    "llm_sidecar.route.hedge_won": report.hedge_won,
                }
            )
            if self._legacy:
                attrs["gen_ai.system"] = provider
        if report.ttft is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = report.ttft
        if report.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [report.finish_reason]
        if report.request_id:
            attrs["gen_ai.response.id"] = report.request_id
        attrs.update(self._usage(report))
        span.set_attributes(attrs)
        if report.error_type is not None:
            span.set_attribute("error.type", report.error_type)
            span.set_status(Status(StatusCode.ERROR, report.error_type))
        span.end(end_time=end_ns)

    def _usage(self, report: CallReport) -> Mapping[str, int]:
        usage = report.usage
        if usage is None:
            return {}
        found: dict[str, int] = {}
        names = (
            ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", usage.prompt_tokens),
            ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
             usage.completion_tokens),
            ("gen_ai.usage.cache_read.input_tokens", None, usage.cached_tokens),
            ("gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
             usage.cache_write_tokens),
        )  # fmt: skip
        for name, legacy, count in names:
            if count is None:
                continue
            found[name] = count
            if self._legacy and legacy is not None:
                found[legacy] = count
        return found


def end_attempt(span: Span, error_type: str | None) -> None:
    if error_type is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
    span.end()


def current(span: Span | None) -> AbstractContextManager[None]:
    """Make `span` the current one (what providers' traceparent headers name) for a block."""
    return _attached(None if span is None else trace.set_span_in_context(span))


def continued(carrier: Mapping[str, str] | None) -> AbstractContextManager[None]:
    """Continue the caller's W3C trace context (traceparent, tracestate) for a block."""
    return _attached(propagate.extract(carrier) if carrier else None)


@contextmanager
def _attached(context: Context | None) -> Iterator[None]:
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)
