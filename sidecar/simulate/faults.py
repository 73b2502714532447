"""Faults a simulated upstream can inject, and the switch that decides which request gets one.

refuse      the server stops listening (connection refused) until the fault is cleared
http_500    an HTTP 500 in the protocol's error shape
http_503    an HTTP 503
http_429    an HTTP 429 with a Retry-After header of `retry_after` seconds
http_529    Anthropic's "overloaded" status (other protocols have none and answer 503)
hang        the request is read, then nothing is sent until the client goes away
drop        `after_tokens` tokens, then the connection is closed mid-stream
malformed   `after_tokens` tokens, then a line that is not valid JSON/SSE, then the end
error_line  `after_tokens` tokens, then the protocol's mid-stream error frame
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

FaultKind = Literal[
    "refuse",
    "http_500",
    "http_503",
    "http_429",
    "http_529",
    "hang",
    "drop",
    "malformed",
    "error_line",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

# Kinds that replace the whole response with an HTTP error status.
HTTP_FAULT_STATUS: Mapping[str, int] = {
    "http_500": 500,
    "http_503": 503,
    "http_429": 429,
    "http_529": 529,
}
# Kinds that break a response after some tokens were sent.
STREAM_FAULTS = frozenset({"drop", "malformed", "error_line"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault. `probability` (drawn from a generator seeded with `seed`) picks the requests
    it hits; `count` limits it to the next N hits, after which it clears itself; `duration`
    clears it after that many seconds (the only way to end a `refuse` set from another process).
    """

    kind: FaultKind
    after_tokens: int = 0
    retry_after: float = 1.0
    probability: float = 1.0
    count: int | None = None
    seed: int | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault.kind: {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        _check_int("fault.after_tokens", self.after_tokens, minimum=0)
        _check_number("fault.retry_after", self.retry_after)
        _check_number("fault.probability", self.probability)
        if self.probability > 1.0:
            raise ValueError(f"fault.probability: must be within [0, 1], got {self.probability}")
        if self.count is not None:
            _check_int("fault.count", self.count, minimum=1)
        if self.seed is not None:
            _check_int("fault.seed", self.seed, minimum=None)
        if self.duration is not None:
            _check_number("fault.duration", self.duration)
        if self.kind == "refuse" and (self.probability != 1.0 or self.count is not None):
            # A refused connection never reaches a handler, so there is no request to draw for.
            raise ValueError("fault: kind 'refuse' takes neither probability nor count")


def fault_from_json(value: object) -> Fault | None:
    """A fault from its control-endpoint form: null, or an object of Fault's fields."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"fault: expected an object or null, got {value!r}")
    fields = set(Fault.__dataclass_fields__)
    unknown = set(value) - fields
    if unknown:
        raise ValueError(f"fault: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    if "kind" not in value:
        raise ValueError("fault.kind: missing")
    return Fault(**value)


def fault_to_json(fault: Fault | None) -> dict[str, Any] | None:
    if fault is None:
        return None
    return {name: getattr(fault, name) for name in Fault.__dataclass_fields__}


class FaultSwitch:
    """The fault currently armed on one simulator and how many hits it has left."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self._remaining = fault.count if fault is not None else None
        self._rng = random.Random(fault.seed if fault is not None else None)

    def draw(self) -> Fault | None:
        """The fault to inject into the request arriving now, or None."""
        fault = self.fault
        if fault is None or fault.kind == "refuse":
            return None
        if fault.probability < 1.0 and self._rng.random() >= fault.probability:
            return None
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self.fault = None
        return fault


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value}")
