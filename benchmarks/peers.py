"""The field's most used gateway beside the sidecar: the LiteLLM proxy, in the same run.

    make bench-peers        (installs litellm[proxy] into .venv-peers, then runs this)
    python -m benchmarks --only peers [--quick]

Both gateways get the same configuration file (the sidecar reads LiteLLM's format): one
OpenAI-compatible deployment on the simulated OpenAI upstream, and a master key. Both are
driven over HTTP by the same load generator with the same OpenAI streaming client,
alternating with direct calls to the upstream as in the overhead scenario. LiteLLM runs
as a user would start it: `litellm --config FILE --num_workers 1`, its own defaults
otherwise, with logging off (LITELLM_LOG=ERROR) and its price map read from the package
rather than fetched (LITELLM_LOCAL_MODEL_COST_MAP), so that nothing leaves the machine.

Figures, per gateway: added TTFT p50 / p99 at 1, 10 and 50 callers (local-8b pinned, as
in the overhead scenario), CPU per stream and the highest streams/s at 50 callers
against the instant upstream, and resident memory after the load (the process and its
children). The ratios are LiteLLM's figure over the sidecar's.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import procs
from benchmarks.load import Call, closed_loop, openai_stream
from benchmarks.overhead import (
    LOCAL_8B_CYCLE,
    MASTER_KEY,
    OPENAI_ALIAS,
    OPENAI_MODEL,
    PROFILES,
    UPSTREAM_KEY,
    Side,
)
from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.runtime.child import DEVNULL, Child, spawn

PEER_VENV = Path(__file__).resolve().parent.parent / ".venv-peers"
PEER = "litellm"
SIDECAR = "sidecar"
GATEWAYS = (SIDECAR, PEER)
LEVELS = (1, 10, 50)
_READY_TIMEOUT = 120.0  # LiteLLM imports a great deal before it listens


@dataclass(frozen=True, slots=True)
class Plan:
    rounds: int
    calls: int  # per side and round (also bounded in time)
    seconds: float  # time bound of one side's round
    cpu_calls: int  # streams per side and round of the CPU / throughput point
    warmup: int


PLANS: Mapping[Scale, Plan] = {
    Scale.FULL: Plan(rounds=3, calls=300, seconds=6.0, cpu_calls=300, warmup=100),
    Scale.QUICK: Plan(rounds=2, calls=60, seconds=2.0, cpu_calls=100, warmup=50),
    Scale.SMOKE: Plan(rounds=1, calls=5, seconds=0.5, cpu_calls=10, warmup=5),
}


def config(openai_root: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": OPENAI_ALIAS,
                "litellm_params": {
                    "model": f"openai/{OPENAI_MODEL}",
                    "api_base": f"{openai_root}/v1",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


@dataclass(slots=True)
class Gateway:
    name: str
    pid: int
    base_url: str  # ends in /v1

    def cpu_seconds(self) -> float:
        return sum(_cpu(pid) for pid in _tree(self.pid))

    def rss_mib(self) -> float:
        return sum(_rss_kib(pid) for pid in _tree(self.pid)) / 1024


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn may run the app in a child)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _cpu(pid: int) -> float:
    try:
        return procs.cpu_seconds(pid)
    except OSError:
        return 0.0  # a child that has just exited


def _rss_kib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


@asynccontextmanager
async def litellm(config_path: str, session: aiohttp.ClientSession) -> AsyncIterator[Gateway]:
    binary = PEER_VENV / "bin" / "litellm"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: `make bench-peers` installs LiteLLM there")
    port = procs.free_port()
    env = {
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
    }
    args = ["--config", config_path, "--host", "127.0.0.1", "--port", str(port)]
    process = await spawn(
        [str(binary), *args, "--num_workers", "1"], env, stdout=DEVNULL, stderr=DEVNULL
    )
    root = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(session, f"{root}/health/liveliness", process)
        yield Gateway(PEER, process.pid, f"{root}/v1")
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(session: aiohttp.ClientSession, url: str, process: Child) -> None:
    end = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < end:
        if process.returncode is not None:
            raise RuntimeError(f"litellm exited ({process.returncode}) before it was ready")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"litellm did not answer {url} within {_READY_TIMEOUT:g} s")


async def _measure(
    direct: Call, relayed: Call, gateway: Gateway, plan: Plan, concurrency: int, ramp: float
) -> dict[str, Any]:
    """Alternating direct / relayed rounds; figures as the overhead scenario makes them."""
    sides = {"direct": Side(), "relayed": Side()}
    await closed_loop(relayed, concurrency, concurrency, 30)
    for _ in range(plan.rounds):
        for name, call in (("direct", direct), ("relayed", relayed)):
            side = sides[name]
            wall, cpu = time.perf_counter(), gateway.cpu_seconds()
            side.rounds.append(await closed_loop(call, concurrency, plan.calls, plan.seconds, ramp))
            side.seconds += time.perf_counter() - wall
            if name == "relayed":
                side.cpu += gateway.cpu_seconds() - cpu
    d, r = sides["direct"].figures(), sides["relayed"].figures()
    return {
        "direct": _brief(d),
        "relayed": _brief(r),
        "added_ttft_p50_ms": r["ttft_p50_ms"] - d["ttft_p50_ms"],
        "added_ttft_p99_ms": r["ttft_p99_ms"] - d["ttft_p99_ms"],
    }


def _brief(figures: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("n", "failures", "ttft_p50_ms", "ttft_p99_ms", "rate_per_s", "cpu_s_per_1000")
    return {k: figures[k] for k in keys}


async def _gateway_figures(
    gateway: Gateway, session: aiohttp.ClientSession, upstream: str, plan: Plan, openai: Any
) -> dict[str, Any]:
    direct = openai_stream(session, upstream, OPENAI_MODEL, UPSTREAM_KEY)
    relayed = openai_stream(session, gateway.base_url, OPENAI_ALIAS, MASTER_KEY)
    await closed_loop(relayed, 50, plan.warmup, 60)
    out: dict[str, Any] = {"levels": {}}
    await procs.configure(session, openai.address, profile=dict(PROFILES["local-8b"]))
    for level in LEVELS:
        out["levels"][str(level)] = await _measure(
            direct, relayed, gateway, plan, level, LOCAL_8B_CYCLE
        )
    await procs.configure(session, openai.address, profile=dict(PROFILES["instant"]))
    cpu_plan = Plan(plan.rounds, plan.cpu_calls, 60.0, plan.cpu_calls, 0)
    saturated = await _measure(direct, relayed, gateway, cpu_plan, 50, 0.0)
    out["cpu_ms_per_stream"] = saturated["relayed"]["cpu_s_per_1000"]
    out["streams_per_s"] = saturated["relayed"]["rate_per_s"]
    out["failures"] = saturated["relayed"]["failures"] + sum(
        p["relayed"]["failures"] for p in out["levels"].values()
    )
    out["rss_mib"] = gateway.rss_mib()
    return out


async def run(context: Context) -> Outcome:
    plan = PLANS[context.scale]
    gateways: dict[str, Any] = {}
    async with procs.simulator("openai", "instant", "--api-key", UPSTREAM_KEY) as openai:
        upstream = f"{openai.address}/v1"
        with tempfile.TemporaryDirectory() as tmp:
            path = procs.write_config(tmp, config(openai.address))
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=600)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with procs.sidecar(path, http=True) as sidecar:
                    mine = Gateway(SIDECAR, sidecar.pid, f"{sidecar.more['http']}/v1")
                    gateways[SIDECAR] = await _gateway_figures(
                        mine, session, upstream, plan, openai
                    )
                context.progress.advance("sidecar")
                async with litellm(path, session) as peer:
                    gateways[PEER] = await _gateway_figures(peer, session, upstream, plan, openai)
                context.progress.advance("litellm")
    data = {"gateways": gateways, "ratios": ratios(gateways), "peer_version": _peer_version()}
    return Outcome(metrics(data), data)


def ratios(gateways: Mapping[str, Any]) -> dict[str, float]:
    """LiteLLM's figure over the sidecar's (for streams/s: the sidecar's over LiteLLM's,
    so that every ratio reads "times better")."""
    mine, peer = gateways[SIDECAR], gateways[PEER]
    out = {}
    for level in LEVELS:
        for q in ("p50", "p99"):
            key = f"added_ttft_{q}_ms"
            out[f"c{level}.{key}"] = _ratio(
                peer["levels"][str(level)][key], mine["levels"][str(level)][key]
            )
    out["cpu_ms_per_stream"] = _ratio(peer["cpu_ms_per_stream"], mine["cpu_ms_per_stream"])
    out["streams_per_s"] = _ratio(mine["streams_per_s"], peer["streams_per_s"])
    out["rss_mib"] = _ratio(peer["rss_mib"], mine["rss_mib"])
    return out


def _ratio(a: float, b: float) -> float:
    # An added latency at or under zero (noise) has no meaningful ratio.
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _peer_version() -> str:
    for meta in (PEER_VENV / "lib").glob("python*/site-packages/litellm-*.dist-info"):
        return meta.name.removeprefix("litellm-").removesuffix(".dist-info")
    return "unknown"


def metrics(data: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, g in data["gateways"].items():
        for level, point in g["levels"].items():
            for key in ("added_ttft_p50_ms", "added_ttft_p99_ms"):
                out[f"peers.{name}.c{level}.{key}"] = point[key]
        for key in ("cpu_ms_per_stream", "streams_per_s", "rss_mib"):
            out[f"peers.{name}.{key}"] = g[key]
    for key, value in data["ratios"].items():
        out[f"peers.ratio.{key}"] = value
    return out


def markdown(data: Mapping[str, Any]) -> str:
    mine, peer = data["gateways"][SIDECAR], data["gateways"][PEER]
    r = data["ratios"]
    lines = [
        f"LiteLLM proxy {data['peer_version']} (one worker, its defaults, logging off) and the "
        "sidecar's HTTP bridge, the same configuration, upstream and load generator; "
        "*x* = LiteLLM's figure over the sidecar's (streams/s: the sidecar's over LiteLLM's). "
        "Added TTFT against the local-8b upstream (45 ms, 100 tokens/s), the rest against the "
        "instant one at 50 callers.",
        "",
        "| figure | sidecar | LiteLLM | x |",
        "|---|---:|---:|---:|",
    ]
    for level in LEVELS:
        for q in ("p50", "p99"):
            key = f"added_ttft_{q}_ms"
            ours, theirs = mine["levels"][str(level)][key], peer["levels"][str(level)][key]
            lines.append(
                f"| added TTFT {q}, {level} caller{'s' if level > 1 else ''} (ms) "
                f"| {ours:+.2f} | {theirs:+.2f} | {r[f'c{level}.{key}']:.1f} |"
            )
    rows = (
        ("CPU per stream (ms)", "cpu_ms_per_stream", ".2f"),
        ("highest streams/s (50 callers)", "streams_per_s", ",.0f"),
        ("resident memory after the load (MiB)", "rss_mib", ",.0f"),
    )
    for label, key, fmt in rows:
        lines.append(f"| {label} | {mine[key]:{fmt}} | {peer[key]:{fmt}} | {r[key]:.1f} |")
    failures = mine["failures"] + peer["failures"]
    lines += ["", f"Failed calls: sidecar {mine['failures']}, LiteLLM {peer['failures']}."]
    if failures:
        lines.append("A gateway with failed calls was past what it can carry at that point.")
    return "\n".join(lines)


SCENARIO = Scenario(
    name="peers",
    title="Peers: the sidecar beside the LiteLLM proxy",
    steps=lambda scale: 2,
    run=run,
    time_limit=lambda scale: {Scale.FULL: 1200.0, Scale.QUICK: 400.0, Scale.SMOKE: 200.0}[scale],
    markdown=markdown,
    summary=markdown,
)
