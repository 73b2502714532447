"""Figures from samples: percentiles in milliseconds and downsampled CDFs for the plots."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from benchmarks.load import Sample, percentile

# Quantiles kept for a latency CDF in results.json: enough to draw it, small enough to diff.
CDF_QUANTILES: tuple[float, ...] = (
    *(float(q) for q in range(0, 90)),
    *(90 + q / 4 for q in range(36)),
    99.25,
    99.5,
    99.75,
    99.9,
    100.0,
)


def ms(values: Iterable[float]) -> list[float]:
    return [v * 1000 for v in values]


def summary(samples: Sequence[Sample]) -> dict[str, float]:
    """Count, failures and TTFT / total-time percentiles (ms) of the successful samples."""
    ok = [s for s in samples if s.ok]
    ttft = ms(s.ttft for s in ok)
    total = ms(s.total for s in ok)
    return {
        "n": len(samples),
        "failures": len(samples) - len(ok),
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p90_ms": percentile(ttft, 90),
        "ttft_p99_ms": percentile(ttft, 99),
        "ttft_max_ms": max(ttft, default=math.nan),
        "total_p50_ms": percentile(total, 50),
        "total_p99_ms": percentile(total, 99),
        # How far behind its schedule the open loop started calls (0 in a closed loop).
        "late_p99_ms": percentile(ms(s.late for s in samples), 99),
    }


def cdf(values: Sequence[float]) -> list[float]:
    """The values at CDF_QUANTILES (an empty list for no values)."""
    if not values:
        return []
    ordered = sorted(values)
    return [percentile(ordered, q) if q > 0 else ordered[0] for q in CDF_QUANTILES]
