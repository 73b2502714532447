"""The sidecar's telemetry: metrics, call spans and the call log behind one object.

Built from the `telemetry` and `logging` sections and the standard
OpenTelemetry environment variables (sidecar/telemetry/otlp.py):

- metrics are on by default, aggregated in-process (sidecar/telemetry/aggregate.py)
  and read in OpenTelemetry's data model by two exporters: the Prometheus text
  of `GET /metrics` and, when configured, the SDK's OTLP exporter (or the
  console, every `console_interval` seconds);
- tracing is off unless an OTLP endpoint is set or `telemetry.traces` says
  otlp, console or record (spans made, not exported); off, no tracer exists and
  no span object is made;
- the call log writes one line per call when `logging.call_log` is on.

Everything is recorded once per call, when it ends; nothing per token. An
application embedding the sidecar can pass its own exporters and tracer provider.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, TracerProvider

from sidecar import __version__
from sidecar.config.model import TelemetryConfig
from sidecar.telemetry import otlp
from sidecar.telemetry.aggregate import Aggregates, Labels, Reading
from sidecar.telemetry.export import PeriodicExport
from sidecar.telemetry.logs import CallLog
from sidecar.telemetry.metrics import CallMetrics, observe_gauges
from sidecar.telemetry.prometheus import PrometheusExposition
from sidecar.telemetry.report import CallReport
from sidecar.telemetry.tracing import SCHEMA_URL, CallTracer, legacy_names_wanted
from sidecar.types import ChatRequest

_RESOURCE = {"service.name": "llm-sidecar", "service.version": __version__}


class Telemetry:
    """`metrics` False makes recording a no-op and /metrics absent; `exporters` get the
    metrics every `export_interval` seconds; `tracers` None means no tracing."""

    def __init__(
        self,
        *,
        metrics: bool = True,
        exporters: Sequence[MetricExporter] = (),
        export_interval: float = 60.0,
        tracers: TracerProvider | None = None,
        call_log: CallLog | None = None,
        legacy_names: bool = False,
    ) -> None:
        scope = InstrumentationScope("llm_sidecar", __version__, SCHEMA_URL)
        self._aggregates = Aggregates(Resource.create(_RESOURCE), scope)
        self._known: Callable[[str], bool] = lambda model: True
        self._sources: tuple[Reading, Reading, Reading] | None = None
        self._metrics = (
            CallMetrics(self._aggregates, lambda model: self._known(model)) if metrics else None
        )
        self._reloads = (
            self._aggregates.counter(
                "llm_sidecar.config_reloads",
                "{reload}",
                "Configuration reloads, by outcome",
                ("outcome",),
            )
            if metrics
            else None
        )
        self.prometheus = PrometheusExposition(self.metrics_data) if metrics else None
        self._exports = [
            PeriodicExport(exporter, self.metrics_data, export_interval)
            for exporter in (exporters if metrics else ())
        ]
        self._tracers = tracers
        self.tracer = None if tracers is None else CallTracer(tracers, legacy_names=legacy_names)
        self.call_log = call_log

    @classmethod
    def from_config(cls, config: TelemetryConfig, *, call_log: CallLog | None = None) -> Telemetry:
        # The exporters read the OTEL_EXPORTER_OTLP_* variables themselves, from here too.
        env = os.environ
        exporters: list[MetricExporter] = []
        interval = config.export_interval
        kind = otlp.exporter_choice(env, "metrics", "auto")
        if config.console_interval > 0 and kind == "none":
            kind, interval = "console", config.console_interval
        if config.metrics and kind != "none":
            exporters.append(otlp.metric_exporter(env, kind))
        tracers = None
        kind = otlp.exporter_choice(env, "traces", config.traces)
        if kind != "none":
            tracers = SdkTracerProvider(resource=Resource.create(_RESOURCE))
        if kind in ("otlp", "console"):
            # record: spans made but sent nowhere (the cost of tracing alone, or a provider
            # an embedding application adds its own processor to).
            exporter = otlp.span_exporter(env, kind)
            assert tracers is not None
            tracers.add_span_processor(
                SimpleSpanProcessor(exporter) if kind == "console" else BatchSpanProcessor(exporter)
            )
        return cls(
            metrics=config.metrics,
            exporters=exporters,
            export_interval=interval,
            tracers=tracers,
            call_log=call_log,
            legacy_names=legacy_names_wanted(env.get("OTEL_SEMCONV_STABILITY_OPT_IN")),
        )

    def bind(
        self,
        known_models: Callable[[str], bool],
        in_flight: Reading,
        health: Reading,
        budget_remaining: Reading,
    ) -> None:
        """What the engine lets telemetry read: its aliases (to bound labels) and the
        gauges' sources. A later call (an engine rebuilt on reload) replaces them."""
        self._known = known_models
        first = self._sources is None
        self._sources = (in_flight, health, budget_remaining)
        if first and self._metrics is not None:
            observe_gauges(
                self._aggregates,
                lambda: self._read(0),
                lambda: self._read(1),
                lambda: self._read(2),
            )

    def _read(self, which: int) -> Iterable[tuple[Labels, float]]:
        sources = self._sources
        return () if sources is None else sources[which]()

    def metrics_data(self) -> MetricsData:
        """Every metric as it stands, in OpenTelemetry's data model."""
        return self._aggregates.collect()

    def call_started(self, request: ChatRequest) -> Span | None:
        """The call's span, or None when tracing is off."""
        tracer = self.tracer
        return None if tracer is None else tracer.start_call(request)

    def call_ended(
        self, report: CallReport, span: Span | None = None, prompt: str | None = None
    ) -> None:
        """Record one finished call everywhere it goes: metrics, its span, the call log."""
        if self._metrics is not None:
            self._metrics.record(report)
        trace_id = None
        if span is not None:
            assert self.tracer is not None
            trace_id = format(span.get_span_context().trace_id, "032x")
            self.tracer.end_call(span, report, int((report.started + report.duration) * 1e9))
        call_log = self.call_log
        if call_log is not None and call_log.enabled():
            call_log.write(report, trace_id, prompt)

    def config_reloaded(self, outcome: str) -> None:
        """A configuration reload ended: `outcome` is applied, unchanged or rejected."""
        if self._reloads is not None:
            self._reloads.add(1, (outcome,))

    @property
    def wants_prompt(self) -> bool:
        return self.call_log is not None and self.call_log.include_prompts

    @property
    def exporting(self) -> bool:
        """Whether metrics are pushed anywhere (OTLP or the console)."""
        return bool(self._exports)

    def prometheus_text(self, accept: str | None = None) -> tuple[bytes, str] | None:
        """The Prometheus exposition and its content type, or None with metrics off."""
        return None if self.prometheus is None else self.prometheus.render(accept)

    def shutdown(self) -> None:
        """Flush and close the exporters (blocking I/O: call it off the event loop)."""
        for export in self._exports:
            export.shutdown()
        self._exports = []
        if isinstance(self._tracers, SdkTracerProvider):
            self._tracers.shutdown()
