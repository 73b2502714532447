"""The PNG figures of a run, drawn from its results (so an old results.json can be redrawn).

    route      plan() p50 / p99 per chat size, against the budgets
    overhead   TTFT CDFs per path (one figure per upstream profile: rows are stream /
               unary, columns are concurrency); throughput against added p99 TTFT
    hybrid     per-tier breakdown: share of requests, TTFT p50 / p99, TTFT CDFs
    failover   TTFT of every request over time, coloured by who answered
    peers      the sidecar beside the LiteLLM proxy: added TTFT, CPU, throughput, memory

matplotlib's object API only (no pyplot): no global figure state, nothing left open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter

from benchmarks.stats import CDF_QUANTILES

PATH_STYLE = {
    "direct-ollama": ("tab:gray", "--"),
    "grpc": ("tab:blue", "-"),
    "direct-openai": ("tab:olive", ":"),
    "http": ("tab:orange", "-"),
    "direct-anthropic": ("tab:brown", "-."),
    "anthropic": ("tab:purple", "-"),
    "messages": ("tab:pink", "-"),
    "responses": ("tab:red", "-"),
    "direct-gemini": ("tab:cyan", "-."),
    "gemini": ("tab:green", "-"),
}
# The baseline each relayed path is drawn against.
BASELINE = {
    "grpc": "direct-ollama",
    "http": "direct-openai",
    "anthropic": "direct-anthropic",
    "messages": "direct-anthropic",
    "responses": "direct-openai",
    "gemini": "direct-gemini",
}
DPI = 110


def draw(scenarios: Mapping[str, Mapping[str, Any]], out: Path) -> dict[str, list[str]]:
    """Draw the figures of every scenario that has data; file names per scenario."""
    drawers: dict[str, Callable[[Mapping[str, Any], Path], list[str]]] = {
        "route": route,
        "overhead": overhead,
        "hybrid": hybrid,
        "failover": failover,
        "peers": peers,
    }
    drawn: dict[str, list[str]] = {}
    for name, result in scenarios.items():
        data = result.get("data")
        if data and name in drawers:
            drawn[name] = drawers[name](data, out)
    return drawn


def _save(fig: Figure, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=DPI)
    return name


class _PlainLog(Formatter):
    """Log-axis labels as plain numbers (0.5, 2, 100): powers of ten always, 2 and 5 times
    them when the axis spans under three decades, every tick when it spans very little."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x <= 0 or self.axis is None:
            return ""
        low, high = self.axis.get_view_interval()
        decades = math.log10(high / low) if low > 0 else math.inf
        digit = round(x / 10 ** math.floor(math.log10(x) + 1e-9))
        if digit == 1 or decades < 0.4 or (decades < 3 and digit in (2, 5)):
            return f"{x:g}"
        return ""


def _log(ax: Axes, axis: str = "x") -> None:
    """A log scale labelled with plain numbers."""
    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    which.set_major_formatter(_PlainLog())
    which.set_minor_formatter(_PlainLog())


_FLOOR_MS = 0.1


def _floor(value: float) -> float:
    """A difference for a log axis: a relay can measure a hair faster than direct."""
    return max(value, _FLOOR_MS) if math.isfinite(value) else value


def _finite(values: Sequence[float | None]) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


# -- route ----------------------------------------------------------------------------------


def route(data: Mapping[str, Any], out: Path) -> list[str]:
    rows = data["rows"]
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r['size'] // 1000}K" for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["plan_p50_us"] for r in rows], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [r["plan_p99_us"] for r in rows], 0.4, label="p99")
    for i, (size, budget) in enumerate(((1_000, 50.0), (100_000, 1_000.0))):
        if any(r["size"] == size for r in rows):
            at = [r["size"] for r in rows].index(size)
            label = "p99 budget" if i == 0 else "_nolegend_"
            ax.hlines(budget, at - 0.45, at + 0.45, colors="tab:red", linestyles="--", label=label)
    ax.set_xticks(list(x), labels)
    _log(ax, "y")
    ax.set_xlabel("chat size (tokens)")
    ax.set_ylabel("plan() time (µs, log)")
    ax.set_title(f"Routing decision time (privacy detector: {data['engine']})")
    ax.legend(loc="upper left")
    return [_save(fig, out, "route.png")]


# -- overhead -------------------------------------------------------------------------------


def overhead(data: Mapping[str, Any], out: Path) -> list[str]:
    points = data["points"]
    files = []
    for profile in dict.fromkeys(p["profile"] for p in points):
        files.append(_cdfs(points, profile, out))
    files.append(_throughput(data, out))
    return files


def _cdfs(points: Sequence[Mapping[str, Any]], profile: str, out: Path) -> str:
    mine = [p for p in points if p["profile"] == profile]
    modes = list(dict.fromkeys(p["mode"] for p in mine))
    levels = sorted({p["concurrency"] for p in mine})
    fig = Figure(figsize=(3.2 * len(levels) + 1, 3 * len(modes) + 0.6), layout="constrained")
    axes = fig.subplots(len(modes), len(levels), squeeze=False, sharey=True)
    for row, mode in enumerate(modes):
        for col, level in enumerate(levels):
            ax: Axes = axes[row][col]
            for p in mine:
                if p["mode"] != mode or p["concurrency"] != level:
                    continue
                _cdf(ax, p["direct"]["ttft_cdf_ms"], BASELINE[p["path"]])
                _cdf(ax, p["relayed"]["ttft_cdf_ms"], p["path"])
            ax.set_title(f"{mode}, {level} in flight", fontsize=9)
            _log(ax)
            ax.grid(True, which="both", alpha=0.3)
            if row == len(modes) - 1:
                ax.set_xlabel("time to first token (ms, log)")
            if col == 0:
                ax.set_ylabel("share of requests")
    handles, labels = axes[0][0].get_legend_handles_labels()
    # Two paths may share a baseline, drawn once per path: one entry per label.
    legend = dict(zip(labels, handles, strict=True))
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=4)
    fig.suptitle(f"TTFT CDF per path, upstream profile {profile}")
    return _save(fig, out, f"overhead_ttft_cdf_{profile}.png")


def _cdf(ax: Axes, values: Sequence[float], label: str) -> None:
    if not values:
        return
    color, style = PATH_STYLE.get(label, ("black", "-"))
    shares = [q / 100 for q in CDF_QUANTILES[: len(values)]]
    ax.plot(values, shares, color=color, linestyle=style, label=label, drawstyle="steps-post")


def _throughput(data: Mapping[str, Any], out: Path) -> str:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    closed, opened = fig.subplots(1, 2)
    for path in BASELINE:
        color = PATH_STYLE[path][0]
        for profile, marker in (("instant", "o"), ("local-8b", "s")):
            mine = [
                p
                for p in data["points"]
                if p["path"] == path and p["profile"] == profile and p["mode"] == "stream"
            ]
            xs = [p["relayed"]["rate_per_s"] for p in mine]
            ys = [_floor(p["added"]["ttft_p99_ms"]) for p in mine]
            if mine and _finite(xs) and _finite(ys):
                closed.plot(xs, ys, marker=marker, color=color, label=f"{path}, {profile}")
                for p, x, y in zip(mine, xs, ys, strict=True):
                    closed.annotate(f"x{p['concurrency']}", (x, y), fontsize=7)
        steps = data["rates"].get(path, [])
        xs = [s["rate"] for s in steps]
        ys = [_floor(s["added"]["ttft_p99_ms"]) for s in steps]
        if steps and _finite(ys):
            opened.plot(xs, ys, marker="o", color=color, label=path)
    rates = sorted({s["rate"] for steps in data["rates"].values() for s in steps})
    for ax, title, xlabel in (
        (closed, "closed loop (fixed concurrency), stream", "completed requests/s"),
        (opened, "open loop (fixed arrival rate), local-8b stream", "offered requests/s"),
    ):
        ax.axhline(2.0, color="tab:red", linestyle="--", linewidth=1, label="2 ms")
        _log(ax)
        _log(ax, "y")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{xlabel} (log)")
        ax.set_ylabel(f"added TTFT p99 (ms, log; {_FLOOR_MS:g} or less drawn at {_FLOOR_MS:g})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if rates:
        opened.set_xticks(rates, [f"{r:g}" for r in rates])
    fig.suptitle("Throughput against added time to first token")
    return _save(fig, out, "overhead_throughput.png")


# -- hybrid ---------------------------------------------------------------------------------


def hybrid(data: Mapping[str, Any], out: Path) -> list[str]:
    tiers = [t for t in data["tiers"] if t["n"]]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    share, latency, cdfs = fig.subplots(1, 3)
    names = [t["group"] for t in tiers]
    colors = ["tab:green" if t["locality"] == "local" else "tab:purple" for t in tiers]
    share.barh(names, [t["share"] * 100 for t in tiers], color=colors)
    share.invert_yaxis()
    share.set_xlabel("% of requests (green local, purple cloud)")
    share.set_title(f"Where requests went: {data['local_share']:.0%} local", fontsize=10)
    x = range(len(tiers))
    latency.bar([i - 0.2 for i in x], [t["ttft_p50_ms"] for t in tiers], 0.4, label="p50")
    latency.bar([i + 0.2 for i in x], [t["ttft_p99_ms"] for t in tiers], 0.4, label="p99")
    latency.set_xticks(list(x), names, rotation=20, fontsize=8)
    _log(latency, "y")
    latency.set_ylabel("TTFT (ms, log)")
    latency.set_title("TTFT per tier", fontsize=10)
    latency.legend()
    for t in tiers:
        values = t["ttft_cdf_ms"]
        cdfs.plot(values, [q / 100 for q in CDF_QUANTILES[: len(values)]], label=t["group"])
    overall = data["overall_ttft_cdf_ms"]
    if overall:
        shares = [q / 100 for q in CDF_QUANTILES[: len(overall)]]
        cdfs.plot(overall, shares, color="black", linewidth=2, label="overall")
    cdfs.axvline(100, color="tab:red", linestyle="--", linewidth=1, label="100 ms")
    _log(cdfs)
    cdfs.set_xlabel("time to first token (ms, log)")
    cdfs.set_ylabel("share of requests")
    cdfs.set_title("TTFT CDF per tier", fontsize=10)
    cdfs.grid(True, which="both", alpha=0.3)
    cdfs.legend(fontsize=8)
    cost = data["cost"]
    fig.suptitle(
        f"Hybrid workload, auto routing: cloud cost {cost['saving']:.0%} below all-"
        f"{cost['baseline_model']}"
    )
    return [_save(fig, out, "hybrid_tiers.png")]


# -- failover -------------------------------------------------------------------------------


def failover(data: Mapping[str, Any], out: Path) -> list[str]:
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.axvspan(data["down_at_s"], data["up_at_s"], color="tab:red", alpha=0.12, label="down")
    by_who: dict[str, tuple[list[float], list[float]]] = {}
    for at, ttft, who in data["timeline"]:
        xs, ys = by_who.setdefault(who, ([], []))
        xs.append(at)
        ys.append(ttft)
    for who, (xs, ys) in sorted(by_who.items()):
        color = "tab:red" if who == "failed" else None
        ax.scatter(xs, ys, s=6, label=who, color=color)
    _log(ax, "y")
    ax.set_xlabel("request sent at (s)")
    ax.set_ylabel("time to first token (ms, log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, markerscale=2)
    ax.set_title(
        f"Failover: {data['failed_before_first_token']} lost before the first token, "
        f"{data['failed_mid_stream']} mid-stream"
    )
    return [_save(fig, out, "failover_timeline.png")]


# -- peers ----------------------------------------------------------------------------------


def peers(data: Mapping[str, Any], out: Path) -> list[str]:
    """One figure, four panels, the sidecar and LiteLLM side by side in each (log scales:
    the two are tens of times apart)."""
    gateways = data["gateways"]
    names = list(gateways)
    colors = {"sidecar": "tab:blue", "litellm": "tab:red"}
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ttft, cpu, rate, memory = fig.subplots(1, 4, width_ratios=(3, 1, 1, 1))
    levels = list(next(iter(gateways.values()))["levels"])
    width = 0.8 / (2 * len(names))
    for i, name in enumerate(names):
        g = gateways[name]
        for j, q in enumerate(("p50", "p99")):
            xs = [k + (2 * i + j - len(names) + 0.5) * width for k in range(len(levels))]
            ys = [_floor(g["levels"][lv][f"added_ttft_{q}_ms"]) for lv in levels]
            ttft.bar(
                xs,
                ys,
                width,
                color=colors.get(name, "gray"),
                alpha=0.55 + 0.45 * j,
                label=f"{name} {q}",
            )
        for ax, key in ((cpu, "cpu_ms_per_stream"), (rate, "streams_per_s"), (memory, "rss_mib")):
            ax.bar([i], [max(g[key], 1e-3)], color=colors.get(name, "gray"))
    ttft.set_xticks(range(len(levels)), [f"{lv} caller(s)" for lv in levels])
    ttft.set_ylabel(f"added TTFT (ms, log; {_FLOOR_MS:g} or less drawn at {_FLOOR_MS:g})")
    ttft.legend(fontsize=8)
    for ax, title in (
        (ttft, "added time to first token"),
        (cpu, "CPU per stream (ms)"),
        (rate, "highest streams/s"),
        (memory, "resident memory (MiB)"),
    ):
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    for ax in (cpu, rate, memory):
        ax.set_xticks(range(len(names)), names)
    fig.suptitle(f"The sidecar beside the LiteLLM proxy {data.get('peer_version', '')}")
    return [_save(fig, out, "peers.png")]
