"""What the HTTP bridge adds: the same OpenAI SSE streams direct to a simulated OpenAI upstream
and through `llm-sidecar serve`'s bridge, in the same run.

    python -m benchmarks.bridge_bench [--quick]

Three processes: the simulated OpenAI upstream, the sidecar (gRPC + HTTP bridge,
calling its engine in-process), and this load generator, which speaks the same
SSE client code to both. Direct and bridged rounds alternate so that drift on a
noisy machine hits both alike; the figures are differences of percentiles from
one run. Sidecar CPU is read from the sidecar process (/proc/<pid>/stat), so the
load generator's own CPU does not count. The simulator's CPU per direct stream is
printed next to it: with one paced stream at a time, every token is a wake-up
from idle, and on a small VM that costs any Python server milliseconds per
stream whatever it does; the difference between the two columns is the relay.

The local-8b point pins the preset's ranges to their middle (45 ms to the first
token, 100 tokens/s): a uniformly random 30-60 ms first token would add more
noise to a p50 than the milliseconds being measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from benchmarks import procs
from benchmarks.load import PROMPT, Call, Sample, closed_loop, percentile

MODEL = "qwen2.5"
ALIAS = "vllm-local"
UPSTREAM_KEY = "sk-bench-upstream"
MASTER_KEY = "sk-bench-master"
# (preset name, extra `simulate` flags, label)
PROFILES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("instant", (), "instant"),
    ("local-8b", ("--ttft-ms", "45", "--tokens-per-second", "100"), "local-8b"),
)
CONCURRENCY = (1, 10, 50)
# Streams per side and per point: (full run, --quick), sized so that no point runs long.
COUNTS = {
    ("instant", 1): (400, 100),
    ("instant", 10): (1500, 300),
    ("instant", 50): (3000, 600),
    ("local-8b", 1): (60, 20),
    ("local-8b", 10): (300, 100),
    ("local-8b", 50): (1000, 300),
}
ROUNDS = 2  # each side's count is split into this many alternating rounds
ROUND_TIME_LIMIT = 60.0


# -- the client ------------------------------------------------------------------------------


def openai_stream(session: aiohttp.ClientSession, base_url: str, model: str, api_key: str) -> Call:
    """Stream one chat from an OpenAI-compatible server, timing the first content token."""
    url = f"{base_url}/chat/completions"
    body = orjson.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}

    async def call() -> Sample:
        start = time.perf_counter()
        ttft = 0.0
        tokens = 0
        done = False
        tail = b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                events = (tail + data).split(b"\n\n")
                tail = events.pop()
                for event in events:
                    payload = event[6:] if event.startswith(b"data: ") else b""
                    if payload == b"[DONE]":
                        done = True
                    elif payload and _content(payload):
                        tokens += 1
                        if tokens == 1:
                            ttft = time.perf_counter() - start
        return Sample(ttft, time.perf_counter() - start, ok=done and tokens > 0, tokens=tokens)

    return call


def _content(payload: bytes) -> str:
    choices: list[dict[str, Any]] = orjson.loads(payload).get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


# -- the processes ---------------------------------------------------------------------------


def config_text(api_base: str) -> str:
    return (
        "model_list:\n"
        f"  - model_name: {ALIAS}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {api_base}\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


def upstream(preset: str, flags: Sequence[str]) -> AbstractAsyncContextManager[procs.Proc]:
    args = ["simulate", "openai", "--port", "0", "--profile", preset, "--api-key", UPSTREAM_KEY]
    return procs.running([*args, *flags], r"simulated \w+ server on (http://\S+)")


def sidecar(config_path: str) -> AbstractAsyncContextManager[procs.Proc]:
    args = ["serve", "--config", config_path, "--grpc-port", "0", "--http-port", "0"]
    return procs.running(args, r"serving HTTP on (http://\S+)")


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Point:
    profile: str
    concurrency: int
    direct: list[Sample] = field(default_factory=list)
    bridged: list[Sample] = field(default_factory=list)
    sidecar_cpu: float = 0.0  # CPU seconds the sidecar spent on the bridged streams
    # CPU seconds the simulator spent on the direct streams: the floor any Python server
    # writing the same paced stream pays on this machine, for scale.
    upstream_cpu: float = 0.0

    def added_ms(self, what: str, q: float) -> float:
        """Milliseconds the bridge adds at percentile q, for 'ttft' or 'total'."""
        direct = [getattr(s, what) for s in self.direct if s.ok]
        bridged = [getattr(s, what) for s in self.bridged if s.ok]
        return (percentile(bridged, q) - percentile(direct, q)) * 1000

    def direct_ms(self, what: str, q: float) -> float:
        return percentile([getattr(s, what) for s in self.direct if s.ok], q) * 1000

    def failures(self) -> int:
        return sum(not s.ok for s in self.direct + self.bridged)

    def cpu_ms_per_stream(self) -> float:
        ok = sum(s.ok for s in self.bridged)
        return self.sidecar_cpu / ok * 1000 if ok else float("nan")

    def upstream_cpu_ms_per_stream(self) -> float:
        ok = sum(s.ok for s in self.direct)
        return self.upstream_cpu / ok * 1000 if ok else float("nan")


async def measure_point(
    point: Point,
    direct: Call,
    bridged: Call,
    sidecar_proc: procs.Proc,
    upstream_proc: procs.Proc,
    count: int,
) -> Point:
    """Alternate direct and bridged rounds of `count` streams per side in total."""
    per_round = max(1, count // ROUNDS)
    for _ in range(ROUNDS):
        before = upstream_proc.cpu_seconds()
        point.direct += await closed_loop(direct, point.concurrency, per_round, ROUND_TIME_LIMIT)
        point.upstream_cpu += upstream_proc.cpu_seconds() - before
        before = sidecar_proc.cpu_seconds()
        point.bridged += await closed_loop(bridged, point.concurrency, per_round, ROUND_TIME_LIMIT)
        point.sidecar_cpu += sidecar_proc.cpu_seconds() - before
    return point


async def measure_profile(
    preset: str, flags: Sequence[str], label: str, quick: bool
) -> list[Point]:
    points = []
    async with upstream(preset, flags) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yaml"
            config.write_text(config_text(f"{sim.address}/v1"))
            async with (
                sidecar(str(config)) as proc,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
            ):
                direct = openai_stream(session, f"{sim.address}/v1", MODEL, UPSTREAM_KEY)
                bridged = openai_stream(session, f"{proc.address}/v1", ALIAS, MASTER_KEY)
                # Warm connections, caches and both servers before measuring.
                await closed_loop(direct, 10, 50, 10)
                await closed_loop(bridged, 10, 50, 10)
                for concurrency in CONCURRENCY:
                    count = COUNTS[preset, concurrency][1 if quick else 0]
                    point = Point(label, concurrency)
                    points.append(await measure_point(point, direct, bridged, proc, sim, count))
    return points


@dataclass
class Saturation:
    bridged_rate: float  # streams per second through the bridge
    direct_rate: float  # streams per second straight to the simulator, for scale
    cpu_per_1000: float  # sidecar CPU seconds per 1,000 bridged streams


async def saturation(seconds: float, concurrency: int = 50) -> Saturation:
    """Streams per second at `concurrency` in flight against the instant upstream."""
    async with upstream("instant", ()) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yaml"
            config.write_text(config_text(f"{sim.address}/v1"))
            async with (
                sidecar(str(config)) as proc,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
            ):
                direct = openai_stream(session, f"{sim.address}/v1", MODEL, UPSTREAM_KEY)
                bridged = openai_stream(session, f"{proc.address}/v1", ALIAS, MASTER_KEY)
                await closed_loop(bridged, 10, 100, 10)
                direct_rate, _ = await _rate(direct, concurrency, seconds)
                before = proc.cpu_seconds()
                bridged_rate, ok = await _rate(bridged, concurrency, seconds)
                cpu = proc.cpu_seconds() - before
    return Saturation(bridged_rate, direct_rate, cpu / ok * 1000 if ok else float("nan"))


async def _rate(call: Call, concurrency: int, seconds: float) -> tuple[float, int]:
    start = time.perf_counter()
    samples = await closed_loop(call, concurrency, 1_000_000, seconds)
    ok = sum(s.ok for s in samples)
    return ok / (time.perf_counter() - start), ok


# -- reporting -------------------------------------------------------------------------------


def report(points: Sequence[Point]) -> str:
    head = (
        f"{'profile':<9} {'conc':>4} {'n':>5} {'fail':>4} "
        f"{'direct ttft p50/p99':>20} {'added ttft p50/p99':>19} "
        f"{'added total p50/p99':>20} {'cpu ms/stream':>13} {'(upstream)':>10}"
    )
    lines = [head, "-" * len(head)]
    for p in points:
        lines.append(
            f"{p.profile:<9} {p.concurrency:>4} {len(p.bridged):>5} {p.failures():>4} "
            f"{p.direct_ms('ttft', 50):>9.2f} /{p.direct_ms('ttft', 99):>8.2f} "
            f"{p.added_ms('ttft', 50):>8.2f} /{p.added_ms('ttft', 99):>8.2f} "
            f"{p.added_ms('total', 50):>9.2f} /{p.added_ms('total', 99):>8.2f} "
            f"{p.cpu_ms_per_stream():>13.2f} {p.upstream_cpu_ms_per_stream():>10.2f}"
        )
    lines.append(
        "(milliseconds; 'added' = through the bridge minus direct, same run; cpu = sidecar "
        "CPU per bridged stream, upstream = the simulator's own CPU per direct stream)"
    )
    return "\n".join(lines)


async def main(quick: bool) -> None:
    points: list[Point] = []
    for preset, flags, label in PROFILES:
        points += await measure_profile(preset, flags, label, quick)
    print(report(points), flush=True)
    sat = await saturation(4.0 if quick else 10.0)
    print(
        f"\nsaturation, 50 streams in flight, instant upstream, 20 tokens each:\n"
        f"  through the bridge {sat.bridged_rate:,.0f} streams/s "
        f"(direct to the simulator: {sat.direct_rate:,.0f} streams/s)\n"
        f"  sidecar CPU {sat.cpu_per_1000:.2f} s per 1,000 bridged streams"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer streams per point")
    uvloop.run(main(parser.parse_args().quick))
