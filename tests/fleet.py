"""Real `llm-sidecar serve` processes for the tests that need more than one, or a signal."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
_STARTUP = 30.0
_STOP = 15.0


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    address: str  # host:port of its gRPC door
    banner: str


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def start_serve(config: Path, data_dir: Path, *extra: str) -> ServeProcess:
    """`llm-sidecar serve` on port 0; returns once its banner names the gRPC address."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--config",
        str(config),
        "--grpc-port",
        "0",
        "--no-http",
        "--data-dir",
        str(data_dir),
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    banner = ""
    try:
        async with asyncio.timeout(_STARTUP):
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, "serve exited early:\n" + banner
                banner += line
                match = re.search(r"serving gRPC on (\S+)", line)
                if match:
                    return ServeProcess(process, match.group(1), banner)
    except BaseException:
        await stop_serve(process, signal.SIGKILL)
        raise


async def stop_serve(process: asyncio.subprocess.Process, how: int = signal.SIGTERM) -> int:
    """Signal the process and wait for it to exit (killing it if it takes too long)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(how)
        try:
            async with asyncio.timeout(_STOP):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode if process.returncode is not None else -1


@asynccontextmanager
async def serving(configs: Sequence[tuple[Path, Path]]) -> AsyncIterator[list[ServeProcess]]:
    """Several sidecars at once, each from (config file, data directory), all stopped after."""
    results = await asyncio.gather(*(start_serve(c, d) for c, d in configs), return_exceptions=True)
    started = [r for r in results if isinstance(r, ServeProcess)]
    try:
        for result in results:
            if isinstance(result, BaseException):
                raise result
        yield started
    finally:
        await asyncio.gather(*(stop_serve(s.process) for s in started))
