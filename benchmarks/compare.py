"""Compare two benchmark runs.

    python -m benchmarks.compare OLD NEW [--match TEXT] [--threshold PCT] [--all]

OLD and NEW are result directories (benchmarks/results/<time>/) or their
results.json. Prints the targets of both runs side by side, then every metric
whose name contains TEXT (all of them by default) with its relative change,
flagging the ones that moved more than PCT percent (default 10) the wrong way.
With --all, unflagged metrics are listed too. Exit status 1 when a target that
passed in OLD fails in NEW.

Which way is worse is read from the metric's name: times, CPU and failures
should go down; rates, shares, savings and `returned` should go up. Both runs
should come from the same machine: absolute times move from machine to machine,
which is why the targets themselves compare against a baseline of the same run.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

HIGHER_IS_BETTER = ("rate", "share", "saving", "returned", "local_requests")
NEUTRAL = ("n", "requests", "ok_requests")  # counts that only say how much was measured


def load(path: str) -> dict[str, Any]:
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    results: dict[str, Any] = orjson.loads(file.read_bytes())
    return results


def worse(name: str, old: float, new: float, threshold: float) -> bool:
    """Whether `name` moved from `old` to `new` by more than `threshold` (a fraction) the
    wrong way."""
    last = name.rpartition(".")[2]
    if last in NEUTRAL:
        return False
    higher_is_better = any(word in last for word in HIGHER_IS_BETTER)
    if old == 0:
        return new != 0 and not higher_is_better
    change = (new - old) / abs(old)
    return change < -threshold if higher_is_better else change > threshold


def targets_table(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], int]:
    """Lines comparing the targets, and how many passed before and fail now."""
    before = {t["id"]: t for t in old.get("targets", [])}
    lines = [f"{'target':<28} {'old':>12} {'new':>12}  result (old -> new)"]
    regressions = 0
    for t in new.get("targets", []):
        o = before.get(t["id"], {})
        if o.get("status") == "pass" and t["status"] in ("FAIL", "MISSING"):
            regressions += 1
        lines.append(
            f"{t['id']:<28} {_num(o.get('measured')):>12} {_num(t['measured']):>12}  "
            f"{o.get('status', '-')} -> {t['status']}"
        )
    return lines, regressions


def metrics_table(
    old: Mapping[str, float | None],
    new: Mapping[str, float | None],
    match: str,
    threshold: float,
    everything: bool,
) -> list[str]:
    names = sorted(n for n in set(old) | set(new) if match in n)
    width = max((len(n) for n in names), default=10)
    lines = [f"{'metric':<{width}} {'old':>12} {'new':>12} {'change':>9}"]
    for name in names:
        o, n = old.get(name), new.get(name)
        if o is None or n is None or not (math.isfinite(o) and math.isfinite(n)):
            change, flag = "", ""
        else:
            change = f"{(n - o) / abs(o):+.1%}" if o else ""
            flag = "  <- worse" if worse(name, o, n, threshold) else ""
        if everything or flag:
            lines.append(f"{name:<{width}} {_num(o):>12} {_num(n):>12} {change:>9}{flag}")
    return lines


def _num(value: object) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:,.4g}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.partition("\n\n")[2],
    )
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--match", default="", help="only metrics whose name contains this")
    parser.add_argument("--threshold", type=float, default=10.0, help="percent (default 10)")
    parser.add_argument("--all", action="store_true", help="list unflagged metrics too")
    args = parser.parse_args(argv)
    old, new = load(args.old), load(args.new)
    for run, label in ((old, "old"), (new, "new")):
        meta = run["meta"]
        print(f"{label}: {meta['started']} scale {meta['scale']} commit {meta['git_commit']}")
    lines, regressions = targets_table(old, new)
    print("\n" + "\n".join(lines))
    table = metrics_table(
        old["metrics"], new["metrics"], args.match, args.threshold / 100, args.all
    )
    print(f"\nmetrics ({'all' if args.all else f'worse by more than {args.threshold:g}%'}):")
    print("\n".join(table) if len(table) > 1 else "(none)")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
