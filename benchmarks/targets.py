"""Targets (`targets.yaml`): each compares one figure of a run with a bound.

A target names a metric of the run (`measure`) and, unless the issue gave an
absolute budget, a `baseline` metric of the same run and how they combine
(`difference` = measure - baseline, `ratio` = measure / baseline). A target whose
scenario did not run is skipped; one whose metric is missing from a run of its
scenario fails. `gate: false` marks a claim that is reported but does not fail
the run.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TARGETS = Path(__file__).parent / "targets.yaml"
BOUNDS: Mapping[str, tuple[Callable[[float, float], bool], str]] = {
    "below": (operator.lt, "<"),
    "at_most": (operator.le, "<="),
    "above": (operator.gt, ">"),
    "at_least": (operator.ge, ">="),
}
COMPARES = ("value", "difference", "ratio")
_KEYS = {"id", "description", "measure", "baseline", "compare", "unit", "source", "gate"}


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    MISSING = "MISSING"  # its scenario ran but the figure is not there (or not a number)
    SKIPPED = "skipped"  # its scenario did not run
    INFO = "info-miss"  # a `gate: false` target that was not met


@dataclass(frozen=True, slots=True)
class Target:
    id: str
    description: str
    measure: str
    baseline: str | None
    compare: str
    bound_kind: str  # a key of BOUNDS
    bound: float
    unit: str
    source: str
    gate: bool = True

    @property
    def scenario(self) -> str:
        return self.measure.partition(".")[0]

    def wording(self) -> str:
        """The bound in words, e.g. "< 50 µs" or "minus baseline < 1 ms"."""
        prefix = {"value": "", "difference": "minus baseline ", "ratio": "over baseline "}
        sign = BOUNDS[self.bound_kind][1]
        return f"{prefix[self.compare]}{sign} {self.bound:g} {self.unit}".strip()

    def value(self, metrics: Mapping[str, float | None]) -> float | None:
        """The figure the bound applies to, or None when it cannot be computed."""
        measured = _number(metrics.get(self.measure))
        if measured is None or self.compare == "value":
            return measured
        base = _number(metrics.get(self.baseline or ""))
        if base is None:
            return None
        if self.compare == "difference":
            return measured - base
        return measured / base if base else None


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    measured: float | None
    status: Status

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "id": t.id,
            "description": t.description,
            "target": t.wording(),
            "measure": t.measure,
            "baseline": t.baseline,
            "compare": t.compare,
            "bound": {t.bound_kind: t.bound},
            "unit": t.unit,
            "source": t.source,
            "gate": t.gate,
            "measured": self.measured,
            "status": self.status.value,
        }


def load_targets(path: Path = TARGETS) -> list[Target]:
    """The targets of `path`; ValueError naming every problem found."""
    raw = yaml.safe_load(path.read_text())
    entries = raw.get("targets") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level 'targets' list")
    problems: list[str] = []
    targets = [_target(entry, f"targets[{i}]", problems) for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for t in targets:
        if t.id in seen:
            problems.append(f"targets: id {t.id!r} appears twice")
        seen.add(t.id)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return targets


def _target(entry: object, where: str, problems: list[str]) -> Target:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a mapping")
        entry = {}
    where = f"{where} ({entry.get('id', '?')})"
    bounds = [k for k in BOUNDS if k in entry]
    unknown = set(entry) - _KEYS - set(BOUNDS)
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if len(bounds) != 1:
        problems.append(f"{where}: give exactly one of {', '.join(BOUNDS)}")
    for key in ("id", "measure"):
        if not isinstance(entry.get(key), str) or not entry.get(key):
            problems.append(f"{where}.{key}: required (a string)")
    baseline = entry.get("baseline")
    compare = entry.get("compare", "difference" if baseline else "value")
    if compare not in COMPARES:
        problems.append(f"{where}.compare: expected one of {', '.join(COMPARES)}")
    elif (compare == "value") != (baseline is None):
        problems.append(f"{where}: 'baseline' goes with compare difference or ratio, only")
    bound = entry.get(bounds[0]) if bounds else 0.0
    if isinstance(bound, bool) or not isinstance(bound, int | float):
        problems.append(f"{where}.{bounds[0] if bounds else 'bound'}: expected a number")
        bound = 0.0
    return Target(
        id=str(entry.get("id", "")),
        description=str(entry.get("description", "")),
        measure=str(entry.get("measure", "")),
        baseline=None if baseline is None else str(baseline),
        compare=str(compare),
        bound_kind=bounds[0] if bounds else "below",
        bound=float(bound),
        unit=str(entry.get("unit", "")),
        source=str(entry.get("source", "")),
        gate=bool(entry.get("gate", True)),
    )


def evaluate(
    targets: Sequence[Target], metrics: Mapping[str, float | None], ran: Collection[str]
) -> list[Verdict]:
    verdicts = []
    for t in targets:
        if t.scenario not in ran:
            verdicts.append(Verdict(t, None, Status.SKIPPED))
            continue
        value = t.value(metrics)
        if value is None:
            verdicts.append(Verdict(t, None, Status.MISSING))
        elif BOUNDS[t.bound_kind][0](value, t.bound):
            verdicts.append(Verdict(t, value, Status.PASS))
        else:
            verdicts.append(Verdict(t, value, Status.FAIL if t.gate else Status.INFO))
    return verdicts


def failed(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The verdicts that fail the run."""
    return [v for v in verdicts if v.status in (Status.FAIL, Status.MISSING)]


def table(verdicts: Sequence[Verdict]) -> str:
    """A plain-text table: target, measured value, result."""
    rows = [("target", "bound", "measured", "result")]
    for v in verdicts:
        measured = "-" if v.measured is None else f"{_fmt(v.measured)} {v.target.unit}".strip()
        rows.append((v.target.id, v.target.wording(), measured, v.status.value))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float) -> str:
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
