"""Processes a benchmark runs: simulated upstreams and the sidecar, each in its own process.

Every process binds port 0 and the port is read back from the line it prints
when ready; every process is stopped when the benchmark ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_READY_TIMEOUT = 30.0


@dataclass
class Proc:
    process: asyncio.subprocess.Process
    address: str  # what the process printed as its address (URL or host:port)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # Fields after the command name: state is index 0, utime 11, stime 12.
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@asynccontextmanager
async def running(args: Sequence[str], ready: str) -> AsyncIterator[Proc]:
    """Start `llm-sidecar ARGS...` and wait for a stdout line matching the regex `ready`.

    The regex's first group is the address the process listens on.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "--log-level",
        "WARNING",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    drain: asyncio.Task[None] | None = None
    try:
        address = await asyncio.wait_for(_wait_ready(process, re.compile(ready)), _READY_TIMEOUT)
        assert process.stdout is not None
        drain = asyncio.create_task(_discard(process.stdout))
        yield Proc(process, address)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()


async def _wait_ready(process: asyncio.subprocess.Process, ready: re.Pattern[str]) -> str:
    assert process.stdout is not None
    seen = []
    while line := await process.stdout.readline():
        text = line.decode(errors="replace")
        seen.append(text)
        match = ready.search(text)
        if match:
            return match.group(1)
    raise RuntimeError("process exited before it was ready:\n" + "".join(seen[-20:]))


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def simulator(kind: str, profile: str, *extra: str) -> AbstractAsyncContextManager[Proc]:
    """A simulated upstream; its address is the root URL (http://127.0.0.1:PORT)."""
    return running(
        ["simulate", kind, "--port", "0", "--profile", profile, *extra],
        r"simulated \w+ server on (http://\S+)",
    )


def sidecar(config_path: str, *extra: str) -> AbstractAsyncContextManager[Proc]:
    """A sidecar serving gRPC; its address is host:port."""
    return running(
        ["serve", "--config", config_path, "--grpc-port", "0", *extra],
        r"serving gRPC on (\S+)",
    )
