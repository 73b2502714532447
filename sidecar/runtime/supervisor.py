"""`serve --workers N`: N serve processes sharing the gRPC and HTTP ports, supervised.

Each worker is a whole sidecar (its own event loop, engine and front doors) listening
with SO_REUSEPORT, so the kernel spreads new connections among them. The supervisor
serves nothing itself: it picks the ports (reserving a shared one when asked for port
0), starts the workers, relays their output, replaces one that dies, and forwards
signals: SIGHUP to every worker (each reloads), SIGTERM/SIGINT to every worker (each
drains; a second signal stops them at once), then exits 0 when all exited 0.

Budgets are exact across workers because every reservation goes through the ledger
(SQLite `BEGIN IMMEDIATE` transactions on the shared data directory, or Redis); health
and latency are each worker's own. Workers run in their own session, so a terminal's
Ctrl-C reaches the supervisor only and the workers see one signal, not two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.config import load_config
from sidecar.hostport import host_port
from sidecar.runtime.child import INHERIT, Child, spawn
from sidecar.runtime.pidfile import pid_file

log = logging.getLogger("sidecar.supervisor")

# Set in each worker's environment: how many workers share the ports (for `status`), and
# the supervisor's pid (a worker whose supervisor is gone stops).
WORKERS_ENV = "LLM_SIDECAR_WORKERS"
SUPERVISOR_ENV = "LLM_SIDECAR_SUPERVISOR"
_READY_TIMEOUT = 60.0
# A worker that dies sooner than this after starting is restarted after a growing pause.
_STABLE_AFTER = 10.0
_MAX_BACKOFF = 10.0
_PR_SET_PDEATHSIG = 1
_BANNER_REST = 0.05


@dataclass(slots=True)
class _Worker:
    slot: int
    process: Child
    started: float
    ready: asyncio.Future[str]
    relay: asyncio.Task[None] | None = None
    failures: int = 0


@dataclass(slots=True)
class _Ports:
    grpc: int
    http: int | None
    reserved: list[socket.socket] = field(default_factory=list)


async def supervise(args: argparse.Namespace) -> int:
    # A configuration error is reported once, here, rather than by every worker dying.
    load_config(args.config)
    return await Supervisor(args).run()


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._argv: list[str] = list(args.argv)
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._failed_exits = 0
        self._done = asyncio.Event()

    async def run(self) -> int:
        args = self._args
        ports = _reserve(args.host, args.grpc_port, None if args.no_http else args.http_port)
        try:
            return await self._run(ports)
        finally:
            for sock in ports.reserved:
                sock.close()

    async def _run(self, ports: _Ports) -> int:
        args = self._args
        self._worker_argv = [
            *self._argv,
            "--workers", "1", "--reuse-port", "--pid-file", "",
            "--grpc-port", str(ports.grpc),
            *([] if ports.http is None else ["--http-port", str(ports.http)]),
        ]  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            for slot in range(args.workers):
                await self._start(slot)
            async with asyncio.timeout(_READY_TIMEOUT):
                banners = [await w.ready for w in list(self._workers.values())]
        except (TimeoutError, OSError, RuntimeError) as exc:
            log.error("workers did not start: %s", exc)
            await self._stop_all(signal.SIGKILL)
            return 1
        pids = ", ".join(str(w.process.pid) for w in self._workers.values())
        lines = [
            f"llm-sidecar serving gRPC on {host_port(args.host, ports.grpc)} "
            f"with {args.workers} workers (pids {pids}; SO_REUSEPORT)",
            *banners[0].splitlines()[1:],
        ]
        print("\n".join(lines), flush=True)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGTERM, self._terminate)
        loop.add_signal_handler(signal.SIGINT, self._terminate)
        loop.add_signal_handler(signal.SIGHUP, self._forward(signal.SIGHUP))
        try:
            with pid_file(args.pid_file or None):
                await self._done.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
        return 0 if self._failed_exits == 0 else 1

    # -- workers -----------------------------------------------------------------------

    async def _start(self, slot: int, failures: int = 0) -> None:
        env = {WORKERS_ENV: str(self._args.workers), SUPERVISOR_ENV: str(os.getpid())}
        # Output piped (the relay reads the banner and passes the rest on); logs on stderr
        # go straight to the supervisor's.
        process = await spawn(
            [sys.executable, "-m", "sidecar", *self._worker_argv], env, stderr=INHERIT
        )
        worker = _Worker(
            slot, process, time.monotonic(), asyncio.get_running_loop().create_future()
        )
        worker.failures = failures
        worker.relay = asyncio.create_task(self._relay(worker), name=f"worker {slot}")
        self._workers[slot] = worker

    async def _relay(self, worker: _Worker) -> None:
        """Pass the worker's output on; note when it is ready; replace it if it dies."""
        stream = worker.process.stdout
        assert stream is not None
        banner: list[str] = []
        while line := (await stream.readline()).decode(errors="replace"):
            if not worker.ready.done():
                banner.append(line)
                if "serving gRPC on" in line:
                    # The rest of the banner came in the same write: read what is buffered.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_BANNER_REST):
                            while more := (await stream.readline()).decode(errors="replace"):
                                banner.append(more)
                    worker.ready.set_result("".join(banner))
                continue
            print(f"worker {worker.process.pid}: {line}", end="", flush=True)
        code = await worker.process.wait()
        if not worker.ready.done():
            worker.ready.set_exception(RuntimeError(f"a worker exited with {code} at start"))
        await self._exited(worker, code)

    async def _exited(self, worker: _Worker, code: int) -> None:
        if self._workers.get(worker.slot) is not worker:
            return
        if self._stopping:
            # One still starting had no drain to do, and dies of the signal itself.
            started = worker.ready.done() and worker.ready.exception() is None
            if code != 0 and started:
                self._failed_exits += 1
            del self._workers[worker.slot]
            if not self._workers:
                self._done.set()
            return
        lived = time.monotonic() - worker.started
        failures = 0 if lived >= _STABLE_AFTER else worker.failures + 1
        pause = min(_MAX_BACKOFF, 0.5 * 2 ** (failures - 1)) if failures else 0.0
        log.warning(
            "worker %d (pid %d) exited with %d; starting another%s",
            worker.slot,
            worker.process.pid,
            code,
            f" in {pause:.1f}s" if pause else "",
        )
        await asyncio.sleep(pause)
        if not self._stopping:
            await self._start(worker.slot, failures)
            # A replacement failing at start is retried by its own relay.
            self._workers[worker.slot].ready.add_done_callback(_ignore)

    # -- signals -----------------------------------------------------------------------

    def _terminate(self) -> None:
        """First signal: every worker drains; a second: every worker stops at once."""
        self._stopping = True
        if not self._workers:
            self._done.set()
        self._forward(signal.SIGTERM)()

    def _forward(self, sig: signal.Signals) -> Callable[[], None]:
        def forward() -> None:
            for worker in self._workers.values():
                if worker.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.send_signal(sig)

        return forward

    async def _stop_all(self, sig: signal.Signals) -> None:
        self._stopping = True
        self._forward(sig)()
        for worker in list(self._workers.values()):
            await worker.process.wait()
            if worker.relay is not None:
                await asyncio.wait({worker.relay})


def _reserve(host: str, grpc_port: int, http_port: int | None) -> _Ports:
    """The ports the workers share; port 0 is resolved here, once, and held (bound, not
    listening, SO_REUSEPORT) so that nobody else takes it while workers come and go."""
    ports = _Ports(grpc_port, http_port)
    for name in ("grpc", "http"):
        port = getattr(ports, name)
        if port != 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
        ports.reserved.append(sock)
        setattr(ports, name, sock.getsockname()[1])
    return ports


def follow_supervisor() -> None:
    """In a worker: be sent SIGTERM (a drain) should the supervisor die without a word.

    Done by the worker itself, not between fork and exec, where a multi-threaded
    parent's locks may be held."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(supervisor):  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _ignore(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()
