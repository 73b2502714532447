"""Failover: steady load, the primary local upstream dies, then recovers.

    python -m benchmarks --only failover [--quick]

`fast-local` (simulator A, the seed's 8B) falls back to `strong-local`
(simulator B, the seed's 70B). Requests arrive open loop at a fixed rate; after
a steady phase A's process is killed (SIGKILL, as when Ollama runs out of
memory: answers streaming from it break, requests waiting for its first token
lose their connection, new connections are refused); after the outage a new A
starts on the same port. The health section is short (0.5 s cooldown, probes
every 0.25 s) so that recovery takes seconds, not minutes.

Reported: failed requests, split into those that never got a first token (the
target is zero: the cascade must catch them) and those that failed mid-stream
(the sidecar cannot switch after the first token, and must say so); TTFT
before, during and after the failover; how long after A came back the first
request, and then every request, was served by A again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc

from benchmarks import procs
from benchmarks.load import Sample, chat_request, open_loop, stream_chat
from benchmarks.progress import ticking
from benchmarks.stats import summary
from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

PRIMARY = "fast-local/0"
PRIMARY_PROFILE = "local-8b"
HEALTH = {
    "failure_threshold": 1,
    "cooldown": 0.5,
    "max_cooldown": 1.0,
    "probe_interval": 0.25,
    "probe_timeout": 0.25,
}


@dataclass(frozen=True, slots=True)
class Plan:
    rate: float  # requests per second, open loop
    steady: float  # seconds before the primary dies
    outage: float  # seconds it stays down
    after: float  # seconds of load after it is back

    @property
    def seconds(self) -> float:
        return self.steady + self.outage + self.after


PLANS: Mapping[Scale, Plan] = {
    Scale.FULL: Plan(rate=50, steady=5, outage=5, after=8),
    Scale.QUICK: Plan(rate=40, steady=2, outage=3, after=3),
    Scale.SMOKE: Plan(rate=20, steady=0.4, outage=0.4, after=0.6),
}


def config(primary: str, fallback: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "fast-local",
                "litellm_params": {"model": "ollama/llama3.2:8b", "api_base": primary},
            },
            {
                "model_name": "strong-local",
                "litellm_params": {"model": "ollama/llama3.3:70b", "api_base": fallback},
            },
        ],
        "litellm_settings": {"fallbacks": [{"fast-local": ["strong-local"]}]},
        "router_settings": {"enable_pre_call_checks": True},
        "timeouts": {"connect": 1.0, "first_token": 2.0},
        "health": HEALTH,
    }


@dataclass(slots=True)
class Stack:
    primary: procs.Proc
    stub: pb_grpc.RouterStub


@asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    async with (
        procs.simulator("ollama", PRIMARY_PROFILE) as primary,
        procs.simulator("ollama", "local-70b") as fallback,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            path = procs.write_config(tmp, config(primary.address, fallback.address))
            async with (
                procs.sidecar(path) as sidecar,
                grpc.aio.insecure_channel(sidecar.address) as channel,
            ):
                yield Stack(primary, pb_grpc.RouterStub(channel))


async def run(context: Context) -> Outcome:
    plan = PLANS[context.scale]
    async with stack() as s:
        context.progress.advance("processes up")
        request = chat_request("fast-local")

        async def call() -> Sample:
            return await stream_chat(s.stub, request)

        await open_loop(call, 20, 10, 5)  # warm connections
        start = time.perf_counter()
        requests = int(plan.rate * plan.seconds)
        steps = max(1, round(plan.seconds))
        async with ticking(context.progress, plan.seconds, steps, "load"):
            load = asyncio.create_task(open_loop(call, plan.rate, requests, plan.seconds))
            try:
                # Halfway between two arrivals, so that no request straddles the moment.
                await asyncio.sleep(plan.steady + 0.5 / plan.rate)
                down = time.perf_counter()
                await procs.kill(s.primary)
                await asyncio.sleep(plan.outage)
                port = str(urlsplit(s.primary.address).port)
                revived = procs.simulator("ollama", PRIMARY_PROFILE, "--port", port)
                async with revived:
                    up = time.perf_counter()
                    samples = await load
            finally:
                load.cancel()
                await asyncio.gather(load, return_exceptions=True)
    context.progress.advance("done")
    data = analyse(samples, plan, start, down, up)
    return Outcome(metrics(data), data)


def analyse(
    samples: Sequence[Sample], plan: Plan, start: float, down: float, up: float
) -> dict[str, Any]:
    """Phases by send time: steady (before `down`), failover (`down` until traffic is back on
    the primary), after."""
    ordered = sorted(samples, key=lambda s: s.start)
    after_up = [s for s in ordered if s.start >= up and s.ok]
    first_back = next((s.start - up for s in after_up if s.deployment == PRIMARY), None)
    last_stray = max((s.start for s in after_up if s.deployment != PRIMARY), default=up)
    all_back = next(
        (s.start - up for s in after_up if s.deployment == PRIMARY and s.start > last_stray), None
    )
    back_at = up + all_back if all_back is not None else math.inf
    phases = {
        "steady": [s for s in ordered if s.start < down],
        "failover": [s for s in ordered if down <= s.start < back_at],
        "after": [s for s in ordered if s.start >= back_at],
    }
    failed = [s for s in ordered if not s.ok]
    return {
        "plan": dataclasses.asdict(plan),
        "health": HEALTH,
        "overall": summary(ordered),
        "phases": {name: _phase(group) for name, group in phases.items()},
        "failed": len(failed),
        "failed_before_first_token": sum(s.tokens == 0 for s in failed),
        "failed_mid_stream": sum(s.tokens > 0 for s in failed),
        "errors": sorted({s.error for s in failed})[:5],
        "first_back_s": first_back,
        "all_back_s": all_back,
        "down_at_s": down - start,
        "up_at_s": up - start,
        # The timeline, for the plot: send time (s from start), TTFT (ms), who answered.
        "timeline": [
            [round(s.start - start, 4), round(s.ttft * 1000, 3), s.deployment or "failed"]
            for s in ordered
        ],
    }


def _phase(samples: Sequence[Sample]) -> dict[str, Any]:
    figures: dict[str, Any] = summary(samples)
    figures["served_by"] = {}
    for s in samples:
        if s.ok:
            figures["served_by"][s.deployment] = figures["served_by"].get(s.deployment, 0) + 1
    return figures


def metrics(data: Mapping[str, Any]) -> dict[str, float]:
    out = {
        "failover.requests": float(data["overall"]["n"]),
        "failover.failed": float(data["failed"]),
        "failover.failed_before_first_token": float(data["failed_before_first_token"]),
        "failover.failed_mid_stream": float(data["failed_mid_stream"]),
        "failover.returned": 1.0 if data["first_back_s"] is not None else 0.0,
        "failover.first_back_s": _or_nan(data["first_back_s"]),
        "failover.all_back_s": _or_nan(data["all_back_s"]),
    }
    for name, figures in data["phases"].items():
        out[f"failover.{name}.ttft_p50_ms"] = figures["ttft_p50_ms"]
        out[f"failover.{name}.ttft_p99_ms"] = figures["ttft_p99_ms"]
    return out


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def markdown(data: Mapping[str, Any]) -> str:
    plan, health = data["plan"], data["health"]
    lines = [
        f"Open loop at {plan['rate']:g} requests/s to `fast-local` (falls back to "
        f"`strong-local`). The primary's process was killed at {data['down_at_s']:.1f} s; a new "
        f"one was serving at {data['up_at_s']:.1f} s. Health: cooldown {health['cooldown']:g} s "
        f"(at most {health['max_cooldown']:g} s), probes every {health['probe_interval']:g} s.",
        "",
        f"- failed requests: **{data['failed']}** of {data['overall']['n']} "
        f"(**{data['failed_before_first_token']}** before their first token, "
        f"{data['failed_mid_stream']} mid-stream)",
        f"- traffic back on the primary: first request {_s(data['first_back_s'])} after it "
        f"recovered, and every request from {_s(data['all_back_s'])} on",
        "",
        "| phase (by send time) | requests | failed | TTFT p50 | TTFT p99 | served by |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, p in data["phases"].items():
        served = ", ".join(f"{d} {n}" for d, n in sorted(p["served_by"].items()))
        lines.append(
            f"| {name} | {p['n']} | {p['failures']} | {p['ttft_p50_ms']:.1f} ms "
            f"| {p['ttft_p99_ms']:.1f} ms | {served} |"
        )
    if data["errors"]:
        lines += ["", "Errors: " + "; ".join(data["errors"])]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "never (within the run)" if value is None else f"{value:.2f} s"


SCENARIO = Scenario(
    name="failover",
    title="Failover: the primary local upstream is killed, then comes back",
    steps=lambda scale: max(1, round(PLANS[scale].seconds)) + 2,
    run=run,
    time_limit=lambda scale: PLANS[scale].seconds + 60.0,
    markdown=markdown,
)
