"""Per-call metrics through OpenTelemetry, recorded once a call ends, never per token.

    llm_sidecar.calls                  counter    model_group, deployment, locality, outcome
    llm_sidecar.time_to_first_token    histogram  seconds, per model_group and deployment
    llm_sidecar.fallbacks              counter    calls answered by a later candidate
    llm_sidecar.config_reloads         counter    outcome: applied, unchanged or rejected

With no `telemetry` section the meters are OpenTelemetry's no-op ones, which
cost next to nothing. `telemetry.console_interval` exports to stdout every that
many seconds (for trying it out); an application embedding the sidecar can pass
its own MeterProvider, wired to whatever exporter it uses.
"""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

from sidecar import __version__
from sidecar.config.model import TelemetryConfig
from sidecar.types import RouteTaken


class Telemetry:
    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("llm_sidecar", __version__)
        self._provider = provider
        self._calls = meter.create_counter(
            "llm_sidecar.calls", unit="{call}", description="Chat calls, by how they ended"
        )
        self._ttft = meter.create_histogram(
            "llm_sidecar.time_to_first_token", unit="s", description="Time to the first token"
        )
        self._fallbacks = meter.create_counter(
            "llm_sidecar.fallbacks",
            unit="{call}",
            description="Calls answered by a candidate after the first",
        )
        self._reloads = meter.create_counter(
            "llm_sidecar.config_reloads",
            unit="{reload}",
            description="Configuration reloads, by outcome",
        )

    @classmethod
    def from_config(cls, config: TelemetryConfig) -> Telemetry:
        if config.console_interval <= 0:
            return cls(NoOpMeterProvider())
        reader = PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=config.console_interval * 1000
        )
        return cls(SdkMeterProvider(metric_readers=[reader]))

    def call_ended(
        self, model: str, route: RouteTaken | None, outcome: str, ttft: float | None
    ) -> None:
        """Record one call: `outcome` is ok, error or cancelled."""
        if route is None:
            self._calls.add(1, {"model_group": model, "outcome": outcome})
            return
        where = {"model_group": route.model_group, "deployment": route.deployment}
        self._calls.add(1, {**where, "locality": route.locality.value, "outcome": outcome})
        if ttft is not None:
            self._ttft.record(ttft, where)
        if route.attempts > 1:
            self._fallbacks.add(1, where)

    def config_reloaded(self, outcome: str) -> None:
        """A configuration reload ended: `outcome` is applied, unchanged or rejected."""
        self._reloads.add(1, {"outcome": outcome})

    @property
    def exporting(self) -> bool:
        """Whether metrics go anywhere (an SDK provider rather than the no-op one)."""
        return isinstance(self._provider, SdkMeterProvider)

    def shutdown(self) -> None:
        if isinstance(self._provider, SdkMeterProvider):
            self._provider.shutdown()
