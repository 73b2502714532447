"""Metrics pushed to an exporter (OTLP, console) every so often, from a thread of its
own: reading the aggregates and sending them never runs on the event loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData

log = logging.getLogger("sidecar.telemetry")


class PeriodicExport:
    def __init__(
        self, exporter: MetricExporter, read: Callable[[], MetricsData], interval: float
    ) -> None:
        self._exporter = exporter
        self._read = read
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._export()

    def _export(self) -> None:
        try:
            self._exporter.export(self._read(), timeout_millis=10_000)
        except Exception as exc:
            # The exporter's own words may name an endpoint's credentials: the kind only.
            log.warning("metrics export failed: %s", type(exc).__name__)

    def shutdown(self) -> None:
        """Send what was counted since the last export, then close the exporter."""
        self._stop.set()
        self._thread.join()
        self._export()
        self._exporter.shutdown()
