"""What observability costs: the same calls through three sidecars that differ only in
telemetry, in one run, as ratios to the one with it off.

    python -m benchmarks --only observability [--quick]

    off           telemetry.metrics false, no tracing
    metrics       metrics kept (what GET /metrics reads), no tracing: the default
    on            metrics, and every call traced with spans exported nowhere
                  (telemetry.traces: record)
    otlp          metrics and every call's spans exported over OTLP/HTTP to a receiver in
                  this process (metrics every second, spans in the SDK's batches)
    otlp-sampled  the same with one call in ten traced (OTEL_TRACES_SAMPLER
                  parentbased_traceidratio, 0.1)

One simulated Ollama upstream (instant answers, so the sidecar is the bottleneck)
serves them all. Rounds alternate between the variants, each round starting with
another one, so that drift on a noisy machine hits all alike: throughput is calls
per second with `concurrency` calls in flight (gRPC StreamChat), added TTFT is one
caller's p50 / p99 time to first token minus the same against the upstream
directly, and CPU is read from each sidecar process (/proc).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from benchmarks import procs
from benchmarks.load import Call, closed_loop, grpc_stream, ollama_direct
from benchmarks.overhead import Meter, Side
from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

MODEL = "llama3.2:8b"
ALIAS = "fast-local"
VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "off": {"metrics": False, "traces": "none"},
    "metrics": {"metrics": True, "traces": "none"},
    "on": {"metrics": True, "traces": "record"},
    "otlp": {"metrics": True, "traces": "auto", "export_interval": 1},
    "otlp-sampled": {"metrics": True, "traces": "auto", "export_interval": 1},
}
# The environment of each variant's sidecar, beyond the OTLP endpoint.
SAMPLED: Mapping[str, str] = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}


@dataclass(frozen=True, slots=True)
class Plan:
    concurrency: int
    rounds: int
    calls: int  # per round, for throughput
    seconds: float  # bound of one throughput round
    single_calls: int  # per round, for one caller's TTFT
    warmup: int


PLANS: Mapping[Scale, Plan] = {
    Scale.FULL: Plan(50, 7, 3000, 2.0, 300, 300),
    Scale.QUICK: Plan(50, 3, 1000, 1.0, 100, 100),
    Scale.SMOKE: Plan(10, 1, 20, 0.3, 5, 2),
}


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """An OTLP/HTTP endpoint that takes what it is sent and counts the bytes."""
    counts = {"requests": 0, "bytes": 0}

    async def take(request: web.Request) -> web.Response:
        counts["requests"] += 1
        counts["bytes"] += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", take)
    app.router.add_post("/v1/metrics", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", counts
    finally:
        await runner.cleanup()


async def run(context: Context) -> Outcome:
    plan = PLANS[context.scale]
    async with AsyncExitStack() as stack:
        endpoint, received = await stack.enter_async_context(receiver())
        ollama = await stack.enter_async_context(procs.simulator("ollama", "instant"))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
        sidecars: dict[str, procs.Proc] = {}
        calls: dict[str, Call] = {"direct": ollama_direct(session, ollama.address, MODEL)}
        for name, telemetry in VARIANTS.items():
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            config = {
                "model_list": [
                    {
                        "model_name": ALIAS,
                        "litellm_params": {"model": f"ollama/{MODEL}", "api_base": ollama.address},
                    }
                ],
                "telemetry": dict(telemetry),
            }
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if name.startswith("otlp") else {}
            if name == "otlp-sampled":
                env.update(SAMPLED)
            sidecar = await stack.enter_async_context(
                procs.sidecar(procs.write_config(folder, config), env=env)
            )
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(sidecar.address))
            sidecars[name] = sidecar
            calls[name] = grpc_stream(pb_grpc.RouterStub(channel), ALIAS)
        for call in calls.values():
            await closed_loop(call, plan.concurrency, plan.warmup, 10)
        throughput = {name: Side() for name in sidecars}
        single = {name: Side() for name in calls}
        names = list(sidecars)
        for number in range(plan.rounds):
            # Each round starts with another variant, so no variant always runs last.
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                sidecar = sidecars[name]
                with Meter(throughput[name], sidecar, True):
                    throughput[name].rounds.append(
                        await closed_loop(calls[name], plan.concurrency, plan.calls, plan.seconds)
                    )
            context.progress.advance("throughput round")
            for name, call in calls.items():
                process = sidecars.get(name, ollama)
                with Meter(single[name], process, name in sidecars):
                    single[name].rounds.append(
                        await closed_loop(call, 1, plan.single_calls, plan.seconds * 2)
                    )
            context.progress.advance("single-caller round")
    data = _figures(throughput, single)
    data["otlp_received"] = dict(received)
    return Outcome(_metrics(data), data)


def _figures(throughput: Mapping[str, Side], single: Mapping[str, Side]) -> dict[str, Any]:
    direct = single["direct"].figures()
    variants: dict[str, Any] = {}
    for name in VARIANTS:
        busy, alone = throughput[name].figures(), single[name].figures()
        variants[name] = {
            "rate_per_s": busy["rate_per_s"],
            "failures": busy["failures"] + alone["failures"],
            "cpu_s_per_1000": busy["cpu_s_per_1000"],
            "added_ttft_p50_ms": alone["ttft_p50_ms"] - direct["ttft_p50_ms"],
            "added_ttft_p99_ms": alone["ttft_p99_ms"] - direct["ttft_p99_ms"],
        }
    base = variants["off"]
    for figures in variants.values():
        figures["throughput_ratio"] = _ratio(figures["rate_per_s"], base["rate_per_s"])
        figures["cpu_ratio"] = _ratio(figures["cpu_s_per_1000"], base["cpu_s_per_1000"])
    return {"variants": variants, "direct_ttft_p50_ms": direct["ttft_p50_ms"]}


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def _metrics(data: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, figures in data["variants"].items():
        for key, value in figures.items():
            out[f"observability.{name}.{key}"] = float(value)
    return out


def steps(scale: Scale) -> int:
    return 2 * PLANS[scale].rounds


def markdown(data: Mapping[str, Any]) -> str:
    lines = [
        "gRPC StreamChat against an instant simulated Ollama. *throughput* at "
        f"{PLANS[Scale.QUICK].concurrency}-way concurrency (the full run's level too) as calls/s "
        "and as a ratio to *off*; *cpu* = sidecar CPU s per 1,000 calls; *added ttft* = one "
        "caller's time to first token minus the same straight to the upstream (ms).",
        "",
        "| telemetry | throughput /s | ratio | cpu s/1000 | ratio | added ttft p50 / p99 | fail |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in data["variants"].items():
        lines.append(
            f"| {name} | {f['rate_per_s']:,.0f} | {f['throughput_ratio']:.3f} "
            f"| {f['cpu_s_per_1000']:.2f} | {f['cpu_ratio']:.3f} "
            f"| {f['added_ttft_p50_ms']:+.2f} / {f['added_ttft_p99_ms']:+.2f} | {f['failures']} |"
        )
    got = data.get("otlp_received", {})
    lines += [
        "",
        f"OTLP receiver: {got.get('requests', 0)} exports, {got.get('bytes', 0):,} bytes.",
    ]
    return "\n".join(lines)


SCENARIO = Scenario(
    name="observability",
    title="What observability costs: telemetry off, on without export, and OTLP",
    steps=steps,
    run=run,
    time_limit=lambda scale: {Scale.FULL: 900.0, Scale.QUICK: 150.0, Scale.SMOKE: 60.0}[scale],
    markdown=markdown,
)
