"""`python -m benchmarks`: run the scenarios, write results.json, report.md and the plots,
print the targets table, and exit non-zero when a target fails.

    python -m benchmarks                      every scenario, full size (make bench)
    python -m benchmarks --quick              under two minutes on 2 cores (make bench-quick)
    python -m benchmarks --only route,hybrid  some scenarios
    python -m benchmarks --only peers         LiteLLM beside the sidecar (make bench-peers)
    python -m benchmarks --out DIR            somewhere else than benchmarks/results/<time>/

Exit status: 0 every target met, 1 a target failed or its figure is missing,
2 a scenario crashed (its traceback is in results.json and report.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks import plots, report
from benchmarks.progress import bar
from benchmarks.scenarios import KNOWN, SCENARIOS
from benchmarks.suite import Context, Scale
from benchmarks.targets import TARGETS, evaluate, failed, load_targets, table

RESULTS = Path(__file__).parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scale = Scale.SMOKE if args.smoke else Scale.QUICK if args.quick else Scale.FULL
    names = _names(args.only)
    targets = load_targets(Path(args.targets))  # before running: a broken file fails fast
    out = Path(args.out) if args.out else _fresh_dir(RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    results = uvloop.run(run(scale, names, progress=not args.no_progress))
    ran = [n for n, r in results["scenarios"].items() if not r.get("error")]
    verdicts = evaluate(targets, results["metrics"], ran)
    results["targets"] = [v.to_json() for v in verdicts]
    drawn = plots.draw(results["scenarios"], out)
    (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(report.markdown(results, verdicts, drawn))
    print(table(verdicts))
    for name, result in results["scenarios"].items():
        summary = KNOWN[name].summary
        if summary is not None and result.get("data"):
            print(f"\n{KNOWN[name].title}\n\n{summary(result['data'])}")
    print(f"\nresults: {out}/results.json, report: {out}/report.md")
    crashed = [n for n, r in results["scenarios"].items() if r.get("error")]
    for name in crashed:
        print(f"scenario {name} failed:\n{results['scenarios'][name]['error']}", file=sys.stderr)
    if crashed:
        return 2
    return 1 if failed(verdicts) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the reduced run (make bench-quick)")
    size.add_argument(
        "--smoke", action="store_true", help="about a second per scenario; figures meaningless"
    )
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {','.join(KNOWN)}")
    parser.add_argument("--out", default="", help="output directory")
    parser.add_argument("--targets", default=str(TARGETS), help="targets file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _names(only: str) -> list[str]:
    if not only:
        return list(SCENARIOS)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in KNOWN]
    if unknown:
        raise SystemExit(
            f"--only: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}"
        )
    return [n for n in KNOWN if n in wanted]


def _fresh_dir(root: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = root / stamp
    n = 1
    while out.exists():
        n += 1
        out = root / f"{stamp}-{n}"
    return out


async def run(scale: Scale, names: Sequence[str], *, progress: bool) -> dict[str, Any]:
    """Run the named scenarios one after the other; a crash or overrun of one is recorded
    in its result and the others still run."""
    started, clock = datetime.datetime.now().astimezone(), time.perf_counter()
    meta = _meta(scale, names, started)
    scenarios: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    for name in names:
        scenario = KNOWN[name]
        begun = time.perf_counter()
        result: dict[str, Any] = {"title": scenario.title}
        with bar(name, scenario.steps(scale), enabled=progress) as progress_bar:
            try:
                async with asyncio.timeout(scenario.time_limit(scale)):
                    outcome = await scenario.run(Context(scale, progress_bar))
            except Exception:
                # One scenario's crash must not lose the others' figures: it is reported
                # in results.json and report.md, and the run exits with status 2.
                result["error"] = traceback.format_exc()
            else:
                result["data"] = outcome.data
                metrics.update(outcome.metrics)
        result["seconds"] = time.perf_counter() - begun
        scenarios[name] = result
    meta["seconds"] = time.perf_counter() - clock
    return {"meta": meta, "metrics": dict(sorted(metrics.items())), "scenarios": scenarios}


def _meta(scale: Scale, names: Sequence[str], started: datetime.datetime) -> dict[str, Any]:
    commit, dirty = _git()
    return {
        "started": started.isoformat(timespec="seconds"),
        "scale": scale.value,
        "scenarios": list(names),
        "git_commit": commit,
        "git_dirty": dirty,
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "argv": sys.argv,
    }


def _git() -> tuple[str | None, bool]:
    """The checked-out commit and whether the tree has changes (read-only git calls)."""
    root = Path(__file__).parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, False
    return commit, bool(status.strip())
