"""Budget windows: which period of a LiteLLM duration a moment falls in, in UTC.

Durations are LiteLLM's (`30s`, `10m`, `24h`, `30d`, `1w`, `1mo`): `m` is minutes, `mo` a
calendar month. Windows are aligned, never counted from when a sidecar started, so every
sidecar sharing a ledger puts a call in the same window: seconds, minutes and hours from
the Unix epoch, days and weeks from a Monday midnight (a `1d` window starts at midnight,
a `1w` or `7d` window on Monday, as LiteLLM resets them), months from the first of a
month. Spend is kept per window, so a rollover is a new counter that starts at zero: it
never resets anything, and spend that lands in the new window is never erased.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_DURATION = re.compile(r"([1-9][0-9]*)(mo|s|m|h|d|w)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# 1970-01-05, the first Monday of the epoch.
_MONDAY = 4 * 86400


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # unix seconds
    end: int


def parse_duration(text: str) -> tuple[int, str]:
    """(count, unit) of a LiteLLM duration; ValueError when it is not one."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)), match.group(2)


def window_at(duration: str | None, now: float) -> Window | None:
    """The window of `duration` that holds unix time `now`; None for a cap that never resets."""
    if duration is None:
        return None
    count, unit = parse_duration(duration)
    if unit == "mo":
        return _months(count, now)
    length = count * _SECONDS[unit]
    origin = _MONDAY if unit in ("d", "w") else 0
    start = origin + int((now - origin) // length) * length
    return Window(start, start + length)


def _months(count: int, now: float) -> Window:
    moment = datetime.fromtimestamp(now, UTC)
    index = moment.year * 12 + moment.month - 1
    first = index - index % count
    return Window(_month_start(first), _month_start(first + count))


def _month_start(index: int) -> int:
    return int(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp())
