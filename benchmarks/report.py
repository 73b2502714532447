"""report.md: the targets table, then each scenario's tables and figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.scenarios import KNOWN
from benchmarks.targets import Verdict


def markdown(
    results: Mapping[str, Any], verdicts: Sequence[Verdict], plots: Mapping[str, Sequence[str]]
) -> str:
    meta = results["meta"]
    load = ", ".join(f"{v:.2f}" for v in meta["load_average_at_start"])
    dirty = " (uncommitted changes)" if meta["git_dirty"] else ""
    lines = [
        f"# Benchmark run {meta['started']}",
        "",
        f"Scale **{meta['scale']}**, scenarios {', '.join(meta['scenarios'])}; commit "
        f"`{meta['git_commit'] or 'unknown'}`{dirty}"
        f"; {meta['cpus']} CPUs, load average {load} at the start; took "
        f"{meta['seconds']:.0f} s.",
        "",
        "## Targets",
        "",
        "Each is a difference or a ratio against a baseline measured in the same run, or an "
        "absolute budget where the issue gives one (see `benchmarks/targets.yaml`).",
        "",
        "| target | what | bound | measured | result |",
        "|---|---|---|---:|---|",
    ]
    for v in verdicts:
        t = v.target
        measured = "-" if v.measured is None else f"{v.measured:,.4g} {t.unit}".strip()
        result = f"**{v.status.value}**" if v.status.value.isupper() else v.status.value
        lines.append(f"| {t.id} | {t.description} | {t.wording()} | {measured} | {result} |")
    for name, result in results["scenarios"].items():
        scenario = KNOWN[name]
        lines += ["", f"## {scenario.title} (`{name}`, {result['seconds']:.0f} s)", ""]
        if result.get("error"):
            lines += ["**The scenario failed:**", "", "```", result["error"].rstrip(), "```"]
        if result.get("data"):
            lines.append(scenario.markdown(result["data"]))
        for png in plots.get(name, ()):
            lines += ["", f"![{png}]({png})"]
    return "\n".join(lines) + "\n"
