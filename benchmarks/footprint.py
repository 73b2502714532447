"""What the sidecar costs to keep: start-up time, and memory per connection and per stream.

    python -m benchmarks --only footprint [--quick]

- *start-up to SERVING*: from spawning `llm-sidecar serve` (gRPC and the HTTP bridge)
  until the standard gRPC health service answers SERVING for the Router, polled every
  5 ms over one channel; the median of several starts. It includes the interpreter's
  start and every import, as a deploy or a restart sees it.
- *memory per idle connection*: the sidecar's resident memory (VmRSS) with N idle
  connections open against without, over N: gRPC (one channel each, each having made a
  health call) and HTTP keep-alive (one connection each, each having made a /health
  call).
- *memory per in-flight stream*: resident memory with N gRPC streams waiting on an
  upstream that takes seconds to the first token, against the same connections idle.

Resident memory moves in pages and the allocator keeps what it freed, so these are
differences over hundreds of connections or streams, not exact per-object sizes.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import procs
from benchmarks.load import chat_request
from benchmarks.overhead import GRPC_ALIAS, MASTER_KEY, OLLAMA_MODEL
from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.runtime.child import DEVNULL, spawn

SERVICE = "llmsidecar.v1.Router"
_POLL = 0.005
_SETTLE = 0.5  # seconds for the sidecar to finish setting connections or streams up


@dataclass(frozen=True, slots=True)
class Plan:
    starts: int
    connections: int
    streams: int


PLANS: Mapping[Scale, Plan] = {
    Scale.FULL: Plan(starts=5, connections=400, streams=400),
    Scale.QUICK: Plan(starts=3, connections=200, streams=200),
    Scale.SMOKE: Plan(starts=1, connections=10, streams=10),
}


def config(ollama_root: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": GRPC_ALIAS,
                "litellm_params": {"model": f"ollama/{OLLAMA_MODEL}", "api_base": ollama_root},
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
    return float("nan")


async def startup_seconds(config_path: str) -> float:
    """Spawn to SERVING, the way an orchestrator's gRPC health probe sees it."""
    port = procs.free_port()
    started = time.perf_counter()
    process = await spawn(
        [
            sys.executable, "-m", "sidecar", "--log-level", "WARNING", "serve",
            "--config", config_path, "--grpc-port", str(port), "--http-port", "0",
        ],
        stdout=DEVNULL,
        stderr=DEVNULL,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            while time.perf_counter() - started < 60:
                if process.returncode is not None:
                    raise RuntimeError(f"the sidecar exited ({process.returncode}) while starting")
                try:
                    reply = await stub.Check(request, timeout=1.0, wait_for_ready=False)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - started
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(_POLL)
        raise RuntimeError("the sidecar did not report SERVING within 60 s")
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def grpc_idle(sidecar: procs.Proc, n: int) -> tuple[float, list[grpc.aio.Channel]]:
    """MiB per idle gRPC connection; the channels are returned open."""
    before = rss_mib(sidecar.pid)
    channels = [grpc.aio.insecure_channel(sidecar.address) for _ in range(n)]
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    await asyncio.gather(*(health_pb2_grpc.HealthStub(c).Check(request) for c in channels))
    await asyncio.sleep(_SETTLE)
    return (rss_mib(sidecar.pid) - before) / n, channels


async def http_idle(sidecar: procs.Proc, n: int) -> float:
    """MiB per idle HTTP keep-alive connection to the bridge."""
    url = f"{sidecar.more['http']}/health/liveliness"
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=600)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = rss_mib(sidecar.pid)
        gate = asyncio.Event()

        async def hold() -> None:
            async with session.get(url) as response:
                await response.read()
                await gate.wait()  # every connection busy at once: n of them get opened

        tasks = [asyncio.create_task(hold()) for _ in range(n)]
        await asyncio.sleep(_SETTLE)
        gate.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(_SETTLE)
        return (rss_mib(sidecar.pid) - before) / n


async def in_flight(sidecar: procs.Proc, channels: Sequence[grpc.aio.Channel]) -> float:
    """MiB per stream waiting on its upstream, over the same connections idle."""
    before = rss_mib(sidecar.pid)
    request = chat_request(GRPC_ALIAS)
    metadata = (("authorization", f"Bearer {MASTER_KEY}"),)
    calls = [
        pb_grpc.RouterStub(c).StreamChat(request, metadata=metadata, timeout=30) for c in channels
    ]
    await asyncio.sleep(_SETTLE * 2)
    during = rss_mib(sidecar.pid)
    for call in calls:
        call.cancel()
    return (during - before) / len(channels)


async def run(context: Context) -> Outcome:
    plan = PLANS[context.scale]
    slow = {"ttft": 20.0, "tokens_per_second": None, "answer_tokens": 20}
    async with procs.simulator("ollama", "instant") as ollama:
        with tempfile.TemporaryDirectory() as tmp:
            path = procs.write_config(tmp, config(ollama.address))
            starts = [await startup_seconds(path) for _ in range(plan.starts)]
            context.progress.advance("start-up")
            async with procs.sidecar(path, http=True) as sidecar:
                idle_rss = rss_mib(sidecar.pid)
                http_kib = await http_idle(sidecar, plan.connections) * 1024
                grpc_mib, channels = await grpc_idle(sidecar, plan.streams)
                try:
                    async with aiohttp.ClientSession() as session:
                        await procs.configure(session, ollama.address, profile=slow)
                        stream_kib = await in_flight(sidecar, channels) * 1024
                        await procs.configure(session, ollama.address, profile="instant")
                finally:
                    for channel in channels:
                        await channel.close()
                context.progress.advance("memory")
    data: dict[str, Any] = {
        "startup_s": starts,
        "startup_median_s": statistics.median(starts),
        "rss_idle_mib": idle_rss,
        "kib_per_idle_grpc_connection": grpc_mib * 1024,
        "kib_per_idle_http_connection": http_kib,
        "kib_per_inflight_stream": stream_kib,
        "connections": plan.connections,
        "streams": plan.streams,
    }
    return Outcome(
        {
            "footprint.startup_to_serving_s": data["startup_median_s"],
            "footprint.rss_idle_mib": idle_rss,
            "footprint.kib_per_idle_grpc_connection": data["kib_per_idle_grpc_connection"],
            "footprint.kib_per_idle_http_connection": http_kib,
            "footprint.kib_per_inflight_stream": stream_kib,
        },
        data,
    )


def markdown(data: Mapping[str, Any]) -> str:
    starts = ", ".join(f"{s:.2f}" for s in data["startup_s"])
    return "\n".join(
        [
            "Start-up: spawn to the gRPC health service answering SERVING (interpreter, "
            "imports, configuration, both doors). Memory: resident (VmRSS) differences over "
            f"{data['connections']} connections / {data['streams']} streams, so allocator "
            "and page granularity are spread over many.",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| start-up to SERVING, median (s) | {data['startup_median_s']:.2f} ({starts}) |",
            f"| resident memory idle, after start (MiB) | {data['rss_idle_mib']:.1f} |",
            f"| per idle gRPC connection (KiB) | {data['kib_per_idle_grpc_connection']:.1f} |",
            f"| per idle HTTP keep-alive connection (KiB) "
            f"| {data['kib_per_idle_http_connection']:.1f} |",
            f"| per in-flight gRPC stream (KiB) | {data['kib_per_inflight_stream']:.1f} |",
        ]
    )


SCENARIO = Scenario(
    name="footprint",
    title="Footprint: start-up time and memory per connection and per stream",
    steps=lambda scale: 2,
    run=run,
    time_limit=lambda scale: {Scale.FULL: 300.0, Scale.QUICK: 150.0, Scale.SMOKE: 90.0}[scale],
    markdown=markdown,
)
