"""The metrics in Prometheus' text format, rendered from the same MetricsData the
OTLP exporter sends (one instrumentation, two exporters).

Names follow Prometheus' conventions: dots become underscores, the unit is
appended (`_seconds`, `_usd`), counters end in `_total`. The registry is this
object's own, not prometheus_client's global one, so that two engines in one
process (tests, a reload) never clash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    Metric,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.util.types import Attributes
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric as PromMetric

_UNIT_SUFFIX: Final = {"s": "seconds", "USD": "usd", "By": "bytes"}
_INVALID: Final = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(name: str, unit: str) -> str:
    """The family name Prometheus shows for an OpenTelemetry instrument (without `_total`)."""
    base = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    return _INVALID.sub("_", key)


class PrometheusExposition:
    """Reads the metrics on each scrape and renders them."""

    def __init__(self, read: Callable[[], MetricsData]) -> None:
        self._read = read
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def collect(self) -> Iterator[PromMetric]:
        data = self._read()
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    family = _family(metric)
                    if family is not None:
                        yield family

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics when `accept` asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._registry), content_type


def _family(metric: Metric) -> PromMetric | None:
    name = prometheus_name(metric.name, metric.unit or "")
    data = metric.data
    doc = metric.description or metric.name
    if isinstance(data, Sum) and data.is_monotonic:
        family = PromMetric(name, doc, "counter")
        for point in data.data_points:
            family.add_sample(f"{name}_total", _labels(point.attributes), _number(point))
        return family
    if isinstance(data, Sum | Gauge):
        family = PromMetric(name, doc, "gauge")
        for point in data.data_points:
            family.add_sample(name, _labels(point.attributes), _number(point))
        return family
    if isinstance(data, Histogram):
        family = PromMetric(name, doc, "histogram")
        for hist in data.data_points:
            labels = _labels(hist.attributes)
            total = 0
            for bound, count in zip(hist.explicit_bounds, hist.bucket_counts, strict=False):
                total += count
                family.add_sample(f"{name}_bucket", {**labels, "le": _le(bound)}, total)
            family.add_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, hist.count)
            family.add_sample(f"{name}_count", labels, hist.count)
            family.add_sample(f"{name}_sum", labels, hist.sum)
        return family
    return None


def _labels(attributes: Attributes) -> dict[str, str]:
    if not attributes:
        return {}
    return {label_name(k): str(v) for k, v in attributes.items()}


def _number(point: NumberDataPoint) -> float:
    return float(point.value)


def _le(bound: float) -> str:
    return repr(float(bound))
