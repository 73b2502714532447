"""Exporters chosen from the standard OpenTelemetry environment variables.

    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT
        where to send; either one turns OTLP export of that signal on
    OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL
        grpc or http/protobuf (the default, as the specification says)
    OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT, ..._COMPRESSION, ..._CERTIFICATE
        read by the exporters themselves
    OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER
        otlp, console or none, overriding the choice above (and prometheus for
        metrics, which GET /metrics always serves: nothing is pushed)

An unknown protocol or exporter name is a configuration error, not a silent default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from sidecar.errors import ConfigError

_PROTOCOLS: Final = ("grpc", "http/protobuf")
_EXPORTERS: Final = ("otlp", "console", "none")


def exporter_choice(env: Mapping[str, str], signal: str, configured: str) -> str:
    """otlp, console or none for `signal` (traces or metrics).

    `configured` is the telemetry section's choice: auto defers to the environment.
    """
    named = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if named == "prometheus" and signal == "metrics":
        return "none"  # GET /metrics is always served: nothing to push
    if named:
        if named not in _EXPORTERS:
            raise ConfigError(
                [f"OTEL_{signal.upper()}_EXPORTER: expected one of {', '.join(_EXPORTERS)}, "
                 f"got {named[:40]!r}"]
            )  # fmt: skip
        return named
    if configured != "auto":
        return configured
    endpoint = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" if endpoint else "none"


def protocol(env: Mapping[str, str], signal: str) -> str:
    chosen = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if chosen not in _PROTOCOLS:
        raise ConfigError(
            [f"OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got {chosen[:40]!r}"]
        )
    return chosen


def span_exporter(env: Mapping[str, str], kind: str) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter()
    if protocol(env, "traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpans,
        )

        return GrpcSpans()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpans,
    )

    return HttpSpans()


def metric_exporter(env: Mapping[str, str], kind: str) -> MetricExporter:
    if kind == "console":
        return ConsoleMetricExporter()
    if protocol(env, "metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetrics,
        )

        return GrpcMetrics()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )

    return HttpMetrics()
