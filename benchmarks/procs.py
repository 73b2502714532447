"""Processes a benchmark runs: simulated upstreams and the sidecar, each in its own process.

Every process binds port 0 and the port is read back from the line it prints
when ready; every process is stopped when the benchmark ends, whatever happens.
Simulators are steered at run time through their control endpoint (`configure`).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import yaml

from sidecar.runtime.child import Child, spawn

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
SIM_READY = r"simulated \w+ server on (http://\S+)"
GRPC_READY = r"serving gRPC on (\S+)"
HTTP_READY = r"serving HTTP on (http://\S+)"


@dataclass
class Proc:
    process: Child
    address: str  # what the process printed as its address (URL or host:port)
    # Further addresses, by the names given to `running(also=...)`.
    more: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (see `cpu_seconds`)."""
        return cpu_seconds(self.pid)


def cpu_seconds(pid: int) -> float:
    """CPU time process `pid` has used so far, in nanoseconds' resolution where the kernel
    keeps scheduler statistics: the sum of its threads' time on a CPU. utime + stime from
    /proc/PID/stat tick only every 10 ms, which a short round cannot resolve (its one
    advantage, counting threads that have exited, does not matter here: the servers'
    threads live as long as they do)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # Fields after the command name: state is index 0, utime 11, stime 12.
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@asynccontextmanager
async def running(
    args: Sequence[str],
    ready: str,
    also: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    module: str = "sidecar",
) -> AsyncIterator[Proc]:
    """Start `python -m MODULE ARGS...` (`llm-sidecar ARGS...` by default) and wait for an
    output line matching the regex `ready`.

    The regex's first group is the address the process listens on; each regex of
    `also` must match a line too, and its first group lands in `Proc.more`. `env`
    adds to the environment the process inherits.
    """
    process = await spawn([sys.executable, "-m", module, "--log-level", "WARNING", *args], env)
    drain: asyncio.Task[None] | None = None
    try:
        wanted = {"": re.compile(ready)} | {k: re.compile(v) for k, v in (also or {}).items()}
        found = await asyncio.wait_for(_wait_ready(process, wanted), _READY_TIMEOUT)
        assert process.stdout is not None
        drain = asyncio.create_task(_discard(process.stdout))
        yield Proc(process, found.pop(""), found)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


async def _wait_ready(process: Child, wanted: Mapping[str, re.Pattern[str]]) -> dict[str, str]:
    assert process.stdout is not None
    seen: list[str] = []
    found: dict[str, str] = {}
    while line := await process.stdout.readline():
        text = line.decode(errors="replace")
        seen.append(text)
        for name, pattern in wanted.items():
            match = pattern.search(text)
            if match and name not in found:
                found[name] = match.group(1)
        if len(found) == len(wanted):
            return found
    code = await process.wait()
    raise RuntimeError(
        f"process exited ({code}) before it was ready:\n" + "".join(seen[-20:]).strip()
    )


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def kill(proc: Proc) -> None:
    """SIGKILL: the process dies at once, its connections with it (as a crash would)."""
    proc.process.kill()
    await proc.process.wait()


def simulator(kind: str, profile: str, *extra: str) -> AbstractAsyncContextManager[Proc]:
    """A simulated upstream; its address is the root URL (http://127.0.0.1:PORT)."""
    return running(["simulate", kind, "--port", "0", "--profile", profile, *extra], SIM_READY)


def sidecar(
    config_path: str, *extra: str, http: bool = False, env: Mapping[str, str] | None = None
) -> AbstractAsyncContextManager[Proc]:
    """A sidecar serving gRPC (address host:port); with `http`, also the HTTP bridge, whose
    root URL is `more["http"]`."""
    args = ["serve", "--config", config_path, "--grpc-port", "0"]
    if http:
        also = {"http": HTTP_READY}
        return running([*args, "--http-port", "0", *extra], GRPC_READY, also, env)
    return running([*args, "--no-http", *extra], GRPC_READY, env=env)


def floor(kind: str, upstream: str, *extra: str) -> AbstractAsyncContextManager[Proc]:
    """A reference relay of benchmarks/floors.py (`grpc` or `http`) in front of `upstream`;
    its address is host:port (grpc) or the root URL (http)."""
    ready = GRPC_READY if kind == "grpc" else HTTP_READY
    args = [kind, "--upstream", upstream, "--port", "0", *extra]
    return running(args, ready, module="benchmarks.floors")


def free_port() -> int:
    """A port free right now, for a process that cannot be told to bind port 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def configure(
    session: aiohttp.ClientSession, root_url: str, **settings: Any
) -> dict[str, Any]:
    """Change a running simulator's `profile` and/or `fault` (see sidecar/simulate/server.py)."""
    async with session.post(f"{root_url}/_sim/config", data=orjson.dumps(settings)) as response:
        body: dict[str, Any] = orjson.loads(await response.read())
        if response.status != 200:
            raise RuntimeError(f"{root_url}/_sim/config: HTTP {response.status}: {body}")
        return body


def write_config(directory: str, config: Mapping[str, Any]) -> str:
    """Write a sidecar configuration (LiteLLM-style YAML) into `directory`; return its path."""
    path = os.path.join(directory, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(dict(config), f, sort_keys=False)
    return path
