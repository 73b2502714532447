"""What the sidecar adds: the same streams direct to a simulated upstream and through gRPC.

    python -m benchmarks.overhead [--quick]

Three processes: the simulated Ollama upstream, the sidecar, and this load
generator. For each upstream profile and concurrency, direct and relayed rounds
alternate so drift on a noisy machine hits both alike; the figures are
differences of percentiles measured in the same run. Sidecar CPU is read from
the sidecar process itself (/proc), so the load generator's CPU does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import uvloop

from benchmarks import procs
from benchmarks.load import Sample, closed_loop, grpc_stream, ollama_direct, percentile
from sidecar.api import router_pb2_grpc as pb_grpc

MODEL = "llama3.2:8b"


@dataclass
class Row:
    profile: str
    concurrency: int
    direct: list[Sample] = field(default_factory=list)
    relayed: list[Sample] = field(default_factory=list)
    sidecar_cpu: float = 0.0  # CPU seconds the sidecar spent on the relayed calls

    def added(self, what: str, q: float) -> float:
        """Added milliseconds at percentile q for 'ttft' or 'total'."""
        direct = [getattr(s, what) for s in self.direct if s.ok]
        relayed = [getattr(s, what) for s in self.relayed if s.ok]
        return (percentile(relayed, q) - percentile(direct, q)) * 1000

    def failures(self) -> int:
        return sum(not s.ok for s in self.direct + self.relayed)

    def cpu_ms_per_stream(self) -> float:
        ok = sum(s.ok for s in self.relayed)
        return self.sidecar_cpu / ok * 1000 if ok else float("nan")

    def relayed_rate(self, seconds: float) -> float:
        return sum(s.ok for s in self.relayed) / seconds if seconds else float("nan")


def config_text(root_url: str) -> str:
    return (
        "model_list:\n"
        "  - model_name: fast-local\n"
        "    litellm_params:\n"
        f"      model: ollama/{MODEL}\n"
        f"      api_base: {root_url}\n"
    )


async def measure(
    profile: str, concurrencies: list[int], per_round: int, rounds: int
) -> list[Row]:
    rows = []
    async with procs.simulator("ollama", profile) as upstream:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yaml"
            config.write_text(config_text(upstream.address))
            async with procs.sidecar(str(config), "--no-http") as sidecar:
                connector = aiohttp.TCPConnector(limit=0)
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    grpc.aio.insecure_channel(sidecar.address) as channel,
                ):
                    direct = ollama_direct(session, upstream.address, MODEL)
                    relayed = grpc_stream(pb_grpc.RouterStub(channel), "fast-local")
                    # Warm connections, caches and the upstream before measuring.
                    await closed_loop(direct, 10, 50, 10)
                    await closed_loop(relayed, 10, 50, 10)
                    for concurrency in concurrencies:
                        row = Row(profile, concurrency)
                        for _ in range(rounds):
                            row.direct += await closed_loop(direct, concurrency, per_round, 60)
                            before = sidecar.cpu_seconds()
                            row.relayed += await closed_loop(relayed, concurrency, per_round, 60)
                            row.sidecar_cpu += sidecar.cpu_seconds() - before
                        rows.append(row)
    return rows


async def saturation(seconds: float) -> tuple[float, float]:
    """Relayed streams per second at 50 in flight against the instant upstream, and CPU ms each."""
    async with procs.simulator("ollama", "instant") as upstream:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yaml"
            config.write_text(config_text(upstream.address))
            async with (
                procs.sidecar(str(config), "--no-http") as sidecar,
                grpc.aio.insecure_channel(sidecar.address) as channel,
            ):
                call = grpc_stream(pb_grpc.RouterStub(channel), "fast-local")
                await closed_loop(call, 10, 50, 10)
                loop = asyncio.get_running_loop()
                before_cpu, start = sidecar.cpu_seconds(), loop.time()
                samples = await closed_loop(call, 50, 100_000, seconds)
                elapsed = loop.time() - start
                ok = sum(s.ok for s in samples)
                cpu = sidecar.cpu_seconds() - before_cpu
                return ok / elapsed, cpu / ok * 1000 if ok else float("nan")


def report(rows: list[Row]) -> str:
    head = (
        f"{'profile':<9} {'conc':>4} {'n':>5} {'fail':>4} "
        f"{'direct ttft p50/p99 ms':>23} {'added ttft p50/p99 ms':>22} "
        f"{'added total p50/p99 ms':>23} {'cpu ms/stream':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        direct = [s.ttft * 1000 for s in r.direct if s.ok]
        lines.append(
            f"{r.profile:<9} {r.concurrency:>4} {len(r.relayed):>5} {r.failures():>4} "
            f"{percentile(direct, 50):>10.2f} /{percentile(direct, 99):>10.2f} "
            f"{r.added('ttft', 50):>10.2f} /{r.added('ttft', 99):>9.2f} "
            f"{r.added('total', 50):>10.2f} /{r.added('total', 99):>10.2f} "
            f"{r.cpu_ms_per_stream():>13.2f}"
        )
    return "\n".join(lines)


async def main(quick: bool) -> None:
    concurrencies = [1, 10, 50]
    per_round, rounds = (100, 2) if quick else (300, 4)
    rows = []
    for profile in ("instant", "local-8b"):
        rows += await measure(profile, concurrencies, per_round, rounds)
    print(report(rows))
    rate, cpu = await saturation(5 if quick else 15)
    print(f"\nsaturation (instant upstream, 50 in flight): {rate:,.0f} streams/s, "
          f"{cpu:.2f} ms sidecar CPU per 20-token stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests per point")
    uvloop.run(main(parser.parse_args().quick))
