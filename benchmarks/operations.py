"""Operations figures: start-up to SERVING, throughput and added TTFT at 1 and 2
workers, and the pause a configuration reload causes in a running stream.

    python -m benchmarks.operations [--quick]

Every process (simulated Ollama, sidecar, supervisor and workers) is separate, as in
production; the load comes from this process over several gRPC connections, since
each connection lands on one worker (SO_REUSEPORT spreads connections, not calls).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.procs import running, simulator, write_config
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.runtime.child import spawn

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
REQUEST = pb.ChatRequest(model="chat", messages=[pb.Message(role="user", content="hello")])


def _config(sim_url: str, model: str = "llama3.2:8b") -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "chat",
                "litellm_params": {"model": f"ollama/{model}", "api_base": sim_url},
            }
        ],
        "health": {"probe_interval": 0},
    }


async def _startup(config: str, workers: int) -> float:
    """Seconds from spawning `serve` to the gRPC health check answering SERVING."""
    start = time.perf_counter()
    process = await spawn(
        [
            sys.executable, "-m", "sidecar", "--log-level", "WARNING", "serve", "--config",
            config, "--grpc-port", "0", "--no-http", "--workers", str(workers),
        ]
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while b"serving gRPC on" not in (line := await process.stdout.readline()):
                assert line, "serve exited early"
            address = line.decode().split("serving gRPC on ")[1].split()[0]
            async with grpc.aio.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                while True:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - start
                    await asyncio.sleep(0.005)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def _direct_ttft(session: aiohttp.ClientSession, sim_url: str) -> float:
    start = time.perf_counter()
    body = {"model": "llama3.2:8b", "messages": [{"role": "user", "content": "hello"}]}
    async with session.post(f"{sim_url}/api/chat", json=body) as response:
        await response.content.readline()
        ttft = time.perf_counter() - start
        await response.read()
    return ttft


async def _stream(stub: pb_grpc.RouterStub) -> float:
    start = time.perf_counter()
    ttft = 0.0
    async for _ in stub.StreamChat(REQUEST, timeout=30):
        if not ttft:
            ttft = time.perf_counter() - start
    return ttft


async def _load(address: str, connections: int, seconds: float) -> tuple[float, list[float]]:
    """Streams per second over `connections` connections, each calling back to back."""
    channels = [
        grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(connections)
    ]
    ttfts: list[float] = []
    end = time.perf_counter() + seconds

    async def caller(channel: grpc.aio.Channel) -> int:
        stub = pb_grpc.RouterStub(channel)
        done = 0
        while time.perf_counter() < end:
            ttfts.append(await _stream(stub))
            done += 1
        return done

    try:
        start = time.perf_counter()
        counts = await asyncio.gather(*(caller(c) for c in channels))
        return sum(counts) / (time.perf_counter() - start), ttfts
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def _added_ttft(address: str, sim_url: str, samples: int) -> tuple[float, float]:
    """Median and p90 of (TTFT through the sidecar - TTFT direct), one caller, alternating."""
    added: list[float] = []
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = pb_grpc.RouterStub(channel)
        for _ in range(samples):
            added.append(await _stream(stub) - await _direct_ttft(session, sim_url))
    added.sort()
    return statistics.median(added), added[int(len(added) * 0.9) - 1]


async def _spread(address: str, connections: int) -> tuple[list[int], list[int]]:
    """Calls per worker: one each on `connections` connections, then as many on one channel."""
    per_connection: dict[int, int] = {}
    for _ in range(connections):
        async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
            reply = await pb_grpc.RouterStub(channel).ListModels(pb.ListModelsRequest(), timeout=5)
            per_connection[reply.pid] = per_connection.get(reply.pid, 0) + 1
    one_channel: dict[int, int] = {}
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.RouterStub(channel)
        for _ in range(connections):
            reply = await stub.ListModels(pb.ListModelsRequest(), timeout=5)
            one_channel[reply.pid] = one_channel.get(reply.pid, 0) + 1
    return sorted(per_connection.values()), sorted(one_channel.values())


async def _reload_pause(directory: str, sim_url: str, other_url: str) -> tuple[float, float]:
    """(largest gap between chunks before the reload, largest gap after it) of a paced
    stream across a SIGHUP reload."""
    path = write_config(directory, _config(sim_url))
    args = ["serve", "--config", path, "--grpc-port", "0", "--no-http", "--reload-interval", "0"]
    stamps: list[float] = []
    async with running(args, r"serving gRPC on (\S+)") as sidecar:
        channel = grpc.aio.insecure_channel(sidecar.address)
        try:
            async for _ in pb_grpc.RouterStub(channel).StreamChat(REQUEST, timeout=60):
                stamps.append(time.perf_counter())
                if len(stamps) == 50:
                    write_config(directory, _config(other_url, "llama3.2:3b"))
                    os.kill(sidecar.pid, signal.SIGHUP)
        finally:
            await channel.close()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return max(gaps[:49]), max(gaps[49:])


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.operations")
    parser.add_argument("--quick", action="store_true", help="short runs")
    args = parser.parse_args(argv)
    seconds, samples, starts = (3.0, 100, 2) if args.quick else (10.0, 400, 5)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cpus: {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as directory:
        async with (
            simulator("ollama", "instant") as sim,
            simulator(
                "ollama", "local-8b", "--answer-tokens", "200", "--tokens-per-second", "100"
            ) as paced,
        ):
            config = write_config(directory, _config(sim.address))
            for workers in (1, 2):
                times = [await _startup(config, workers) for _ in range(starts)]
                median_start = statistics.median(times) * 1000
                print(f"start-up to SERVING, {workers} worker(s): median {median_start:.0f} ms")
            for workers in (1, 2):
                serve = ["serve", "--config", config, "--grpc-port", "0", "--no-http"]
                async with running(
                    [*serve, "--workers", str(workers)], r"serving gRPC on (\S+)"
                ) as sc:
                    median, p90 = await _added_ttft(sc.address, sim.address, samples)
                    cpu = sc.cpu_seconds()
                    rate, ttfts = await _load(sc.address, 8, seconds)
                    if workers == 1:
                        per_stream = (sc.cpu_seconds() - cpu) / len(ttfts) * 1000
                        print(f"sidecar CPU per 20-token stream (1 worker): {per_stream:.2f} ms")
                    if workers > 1:
                        split, single = await _spread(sc.address, 32)
                        print(
                            f"2 workers, calls per worker: 32 connections {split}, "
                            f"32 calls on one channel {single}"
                        )
                    print(
                        f"{workers} worker(s): {rate:.0f} streams/s (8 connections, 20-token "
                        f"instant answers); added TTFT one caller median {median * 1e3:.2f} ms, "
                        f"p90 {p90 * 1e3:.2f} ms"
                    )
            before, after = await _reload_pause(directory, paced.address, sim.address)
            print(
                f"reload under a 100 tok/s stream: largest gap between chunks "
                f"{before * 1e3:.1f} ms in the 49 before the SIGHUP, {after * 1e3:.1f} ms after"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
