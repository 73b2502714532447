"""The sidecar's telemetry: metrics, call spans and the call log behind one object.

Built from the `telemetry` and `logging` sections and the standard
OpenTelemetry environment variables (sidecar/telemetry/otlp.py):

- metrics are on by default, kept by the OpenTelemetry SDK and read by two
  exporters: the Prometheus text of `GET /metrics` and, when configured, OTLP
  (or the console, every `console_interval` seconds);
- tracing is off unless an OTLP endpoint is set or `telemetry.traces` says
  otlp, console or record (spans made, not exported); off, no tracer exists and
  no span object is made;
- the call log writes one line per call when `logging.call_log` is on.

Everything is recorded once per call, when it ends; nothing per token. An
application embedding the sidecar can pass its own providers instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Span, TracerProvider

from sidecar import __version__
from sidecar.config.model import TelemetryConfig
from sidecar.telemetry import otlp
from sidecar.telemetry.logs import CallLog
from sidecar.telemetry.metrics import CallMetrics, Reading, observe_gauges
from sidecar.telemetry.prometheus import PrometheusExposition
from sidecar.telemetry.report import CallReport
from sidecar.telemetry.tracing import CallTracer, legacy_names_wanted
from sidecar.types import ChatRequest


class Telemetry:
    def __init__(
        self,
        meters: MeterProvider | None = None,
        tracers: TracerProvider | None = None,
        *,
        prometheus: PrometheusExposition | None = None,
        call_log: CallLog | None = None,
        legacy_names: bool = False,
    ) -> None:
        self._meters = meters or NoOpMeterProvider()
        self._tracers = tracers
        self._meter = self._meters.get_meter("llm_sidecar", __version__)
        self.prometheus = prometheus
        self.tracer = None if tracers is None else CallTracer(tracers, legacy_names=legacy_names)
        self.call_log = call_log
        self._known: Callable[[str], bool] = lambda model: True
        self._metrics = CallMetrics(self._meter, lambda model: self._known(model))

    @classmethod
    def from_config(
        cls,
        config: TelemetryConfig,
        *,
        call_log: CallLog | None = None,
    ) -> Telemetry:
        # The exporters read the OTEL_EXPORTER_OTLP_* variables themselves, from here too.
        env = os.environ
        resource = Resource.create({"service.name": "llm-sidecar", "service.version": __version__})
        meters: MeterProvider | None = None
        prometheus: PrometheusExposition | None = None
        if config.metrics:
            readers: list[MetricReader] = []
            prometheus = PrometheusExposition()
            readers.append(prometheus.reader)
            kind = otlp.exporter_choice(env, "metrics", "auto")
            if config.console_interval > 0 and kind == "none":
                kind = "console"
            if kind != "none":
                interval = config.console_interval if kind == "console" else config.export_interval
                readers.append(
                    PeriodicExportingMetricReader(
                        otlp.metric_exporter(env, kind), export_interval_millis=interval * 1000
                    )
                )
            meters = SdkMeterProvider(metric_readers=readers, resource=resource)
        tracers = None
        kind = otlp.exporter_choice(env, "traces", config.traces)
        if kind == "record":
            # Spans made but sent nowhere: the cost of tracing without export, and a
            # provider an embedding application can add its own processor to.
            tracers = SdkTracerProvider(resource=resource)
        elif kind != "none":
            exporter = otlp.span_exporter(env, kind)
            processor = (
                SimpleSpanProcessor(exporter) if kind == "console" else BatchSpanProcessor(exporter)
            )
            tracers = SdkTracerProvider(resource=resource)
            tracers.add_span_processor(processor)
        legacy = legacy_names_wanted(env.get("OTEL_SEMCONV_STABILITY_OPT_IN"))
        return cls(meters, tracers, prometheus=prometheus, call_log=call_log, legacy_names=legacy)

    def bind(
        self,
        known_models: Callable[[str], bool],
        in_flight: Reading,
        health: Reading,
        budget_remaining: Reading,
    ) -> None:
        """What the engine lets telemetry read: its aliases (to bound labels) and the
        gauges' sources. Called once, by the engine that owns this telemetry."""
        self._known = known_models
        observe_gauges(self._meter, in_flight, health, budget_remaining)

    def call_started(self, request: ChatRequest) -> Span | None:
        """The call's span, or None when tracing is off."""
        tracer = self.tracer
        return None if tracer is None else tracer.start_call(request)

    def call_ended(
        self, report: CallReport, span: Span | None = None, prompt: str | None = None
    ) -> None:
        """Record one finished call everywhere it goes: metrics, its span, the call log."""
        self._metrics.record(report)
        trace_id = None
        if span is not None:
            assert self.tracer is not None
            trace_id = format(span.get_span_context().trace_id, "032x")
            self.tracer.end_call(span, report, int((report.started + report.duration) * 1e9))
        call_log = self.call_log
        if call_log is not None and call_log.enabled():
            call_log.write(report, trace_id, prompt)

    @property
    def wants_prompt(self) -> bool:
        return self.call_log is not None and self.call_log.include_prompts

    @property
    def exporting(self) -> bool:
        """Whether metrics are kept (an SDK provider rather than the no-op one)."""
        return isinstance(self._meters, SdkMeterProvider)

    def prometheus_text(self, accept: str | None = None) -> tuple[bytes, str] | None:
        """The Prometheus exposition and its content type, or None with metrics off."""
        return None if self.prometheus is None else self.prometheus.render(accept)

    def shutdown(self) -> None:
        if isinstance(self._meters, SdkMeterProvider):
            self._meters.shutdown()
        if isinstance(self._tracers, SdkTracerProvider):
            self._tracers.shutdown()
