"""How a simulated model behaves: its latency, its token rate and the answer it gives.

The answer is deterministic text, `answer_tokens` tokens "tok0 ", "tok1 ", ..., so tests can
check the order and the count of what was relayed. The latency and the rate are drawn
uniformly from their ranges once per request, from a generator seeded with `seed`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SimProfile:
    """Latency and size of a simulated model's answers.

    `ttft` is the range (seconds) of the wait before the first token; `tokens_per_second` the
    range of the pace after it, None meaning as fast as possible with no sleeping at all.
    """

    ttft: tuple[float, float] = (0.0, 0.0)
    tokens_per_second: tuple[float, float] | None = None
    answer_tokens: int = 20
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_range("ttft", self.ttft, minimum=0.0, allow_zero=True)
        if self.tokens_per_second is not None:
            _check_range("tokens_per_second", self.tokens_per_second, minimum=0.0)
        if isinstance(self.answer_tokens, bool) or not isinstance(self.answer_tokens, int):
            raise ValueError(f"answer_tokens: expected an integer, got {self.answer_tokens!r}")
        if self.answer_tokens < 0:
            raise ValueError(f"answer_tokens: must be >= 0, got {self.answer_tokens}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected an integer or null, got {self.seed!r}")

    def describe(self) -> str:
        """A one-line human summary, e.g. "ttft 30-60 ms, 80-120 tok/s, 20 tokens"."""
        low, high = self.ttft
        ttft = _span(low * 1000, high * 1000) + " ms"
        if self.tokens_per_second is None:
            rate = "no rate limit"
        else:
            rate = _span(*self.tokens_per_second) + " tok/s"
        return f"ttft {ttft}, {rate}, {self.answer_tokens} tokens"


def presets() -> dict[str, SimProfile]:
    """The named profiles, freshly built (callers may keep or change the dict)."""
    return {
        "instant": SimProfile(),
        "local-8b": SimProfile(ttft=(0.030, 0.060), tokens_per_second=(80.0, 120.0)),
        "local-70b": SimProfile(ttft=(0.080, 0.150), tokens_per_second=(25.0, 35.0)),
        "gpt-4o": SimProfile(ttft=(0.500, 2.000), tokens_per_second=(50.0, 80.0)),
        "gpt-4o-mini": SimProfile(ttft=(0.300, 0.800), tokens_per_second=(80.0, 120.0)),
        "claude-sonnet": SimProfile(ttft=(0.500, 1.200), tokens_per_second=(50.0, 80.0)),
        "gemini-flash": SimProfile(ttft=(0.300, 0.900), tokens_per_second=(120.0, 200.0)),
    }


def profile_by_name(name: str) -> SimProfile:
    known = presets()
    try:
        return known[name]
    except KeyError:
        raise ValueError(
            f"unknown simulator profile {name!r}; known profiles: {', '.join(known)}"
        ) from None


def profile_from_json(value: object) -> SimProfile:
    """A profile from its control-endpoint form: a preset name, or an object of fields."""
    if isinstance(value, str):
        return profile_by_name(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"profile: expected a preset name or an object, got {value!r}")
    unknown = set(value) - {"ttft", "tokens_per_second", "answer_tokens", "seed"}
    if unknown:
        raise ValueError(f"profile: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    base = SimProfile()
    rate = value.get("tokens_per_second", base.tokens_per_second)
    return SimProfile(
        ttft=_pair("profile.ttft", value.get("ttft", base.ttft)),
        tokens_per_second=None if rate is None else _pair("profile.tokens_per_second", rate),
        answer_tokens=value.get("answer_tokens", base.answer_tokens),
        seed=value.get("seed", base.seed),
    )


def profile_to_json(profile: SimProfile) -> dict[str, Any]:
    rate = profile.tokens_per_second
    return {
        "ttft": list(profile.ttft),
        "tokens_per_second": None if rate is None else list(rate),
        "answer_tokens": profile.answer_tokens,
        "seed": profile.seed,
    }


def answer_token(index: int) -> str:
    return f"tok{index} "


def answer_text(tokens: int) -> str:
    return "".join(answer_token(i) for i in range(tokens))


@dataclass(frozen=True, slots=True)
class Pacing:
    """The timing drawn for one answer: the wait before the first token and between tokens."""

    ttft: float
    gap: float | None

    @classmethod
    def draw(cls, profile: SimProfile, rng: random.Random) -> Pacing:
        ttft = rng.uniform(*profile.ttft)
        rate = profile.tokens_per_second
        return cls(ttft=ttft, gap=None if rate is None else 1.0 / rng.uniform(*rate))


def _check_range(name: str, value: object, *, minimum: float, allow_zero: bool = False) -> None:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ValueError(f"{name}: expected a (low, high) pair, got {value!r}")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ValueError(f"{name}: expected numbers, got {value!r}")
        if bound < minimum or (bound == minimum and not allow_zero):
            relation = ">=" if allow_zero else ">"
            raise ValueError(f"{name}: bounds must be {relation} {minimum:g}, got {value!r}")
    if low > high:
        raise ValueError(f"{name}: low bound {low} is above high bound {high}")


def _pair(name: str, value: object) -> tuple[float, float]:
    """A range from JSON: a [low, high] list or a single number meaning a fixed value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value), float(value))
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = value
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            return (float(low), float(high))
    raise ValueError(f"{name}: expected a number or a [low, high] pair, got {value!r}")


def _span(low: float, high: float) -> str:
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"
