"""CPU per stream of each door against its floor: the figure a change to the relay moves.

    python -m benchmarks.door_cpu [--doors grpc,http] [--rounds 7] [--calls 2000]
                                  [--concurrency 50] [--profile instant]
                                  [--py-spy FILE]

The overhead scenario's processes (benchmarks/overhead.py: simulators, the sidecar with
its HTTP bridge, the two floors), then closed-loop rounds of `calls` streams with
`concurrency` in flight, alternating between every door and its floor so that drift on a
shared machine hits all of them alike. CPU is read from the serving process (/proc), so
it is not a wall-clock figure: other work on the machine moves it far less than a
latency. Printed per door: the minimum and the median over the rounds, in ms of CPU per
stream, with the load average before and after.

With `--py-spy FILE`, py-spy (the bench extra) samples the sidecar (or, with
`--spy-on-floor`, the first door's floor) for the whole run and writes a flame graph
(`.svg`) or collapsed stacks (any other name) to FILE; `--native` adds the C frames
(grpc core, uvloop, protobuf).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvloop

from benchmarks import overhead
from benchmarks.load import closed_loop

# A round's time bound: long enough for `calls` streams even on a loaded machine.
_ROUND_SECONDS = 120.0


@dataclass(slots=True)
class Tally:
    ms_per_stream: list[float] = field(default_factory=list)
    failures: int = 0
    # Text messages the callers received per stream, per round: how finely the relay
    # split the answer (one message per upstream read), which moves the CPU figure.
    messages: list[float] = field(default_factory=list)

    def line(self, name: str) -> str:
        values = self.ms_per_stream
        return (
            f"{name:>12}: min {min(values):.3f}  median {statistics.median(values):.3f} ms CPU "
            f"per stream  ({', '.join(f'{v:.3f}' for v in values)}; {self.failures} failed; "
            f"text messages per stream {', '.join(f'{m:.1f}' for m in self.messages)})"
        )


async def measure(args: argparse.Namespace) -> dict[str, Tally]:
    doors: Sequence[str] = args.doors.split(",")
    tallies = {name: Tally() for door in doors for name in (overhead.FLOOR[door], door)}
    async with overhead.stack() as s:
        await overhead.set_profile(s, args.profile)
        for name in tallies:
            await closed_loop(s.calls[name, "stream"], args.concurrency, args.warmup, 60)
        spied = s.floors[doors[0]] if args.spy_on_floor else s.sidecar
        spy = _py_spy(spied.pid, args.py_spy, args.native) if args.py_spy else None
        try:
            for _ in range(args.rounds):
                for door in doors:
                    for name, proc in (
                        (overhead.FLOOR[door], s.floors[door]),
                        (door, s.sidecar),
                    ):
                        call = s.calls[name, "stream"]
                        before = proc.cpu_seconds()
                        samples = await closed_loop(
                            call, args.concurrency, args.calls, _ROUND_SECONDS
                        )
                        used = proc.cpu_seconds() - before
                        ok = sum(x.ok for x in samples)
                        tallies[name].ms_per_stream.append(used / ok * 1000 if ok else float("nan"))
                        tallies[name].failures += len(samples) - ok
                        tallies[name].messages.append(sum(x.tokens for x in samples) / len(samples))
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(30)
    return tallies


def _py_spy(pid: int, out: str, native: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` until interrupted (it writes its output when it stops)."""
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    kind = "flamegraph" if out.endswith(".svg") else "raw"
    args = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", kind, "-o", out]
    if native:
        args.append("--native")  # C frames too: grpc core, uvloop, protobuf
    if not native:
        args.append("--nonblocking")  # (native stacks need the process stopped)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # it attaches before the first round
    return process


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doors", default="grpc,http", help="grpc, http or grpc,http")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="streams per round and side")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--profile", default="instant", choices=sorted(overhead.PROFILES))
    parser.add_argument("--py-spy", default="", help="profile the sidecar into this file")
    parser.add_argument("--native", action="store_true", help="py-spy: C frames too")
    parser.add_argument(
        "--spy-on-floor", action="store_true", help="py-spy: the first door's floor instead"
    )
    args = parser.parse_args(argv)
    load: Any = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    tallies = uvloop.run(measure(args))
    for name, tally in tallies.items():
        print(tally.line(name))
    for door in args.doors.split(","):
        floor, relayed = tallies[overhead.FLOOR[door]], tallies[door]
        ratio = min(relayed.ms_per_stream) / min(floor.ms_per_stream)
        # Each round's door against the floor round just before it: drift cancels out.
        paired = [r / f for r, f in zip(relayed.ms_per_stream, floor.ms_per_stream, strict=True)]
        print(
            f"{door:>12}: x{ratio:.2f} of its floor (minimum over minimum), "
            f"x{statistics.median(paired):.2f} (median of the rounds' ratios)"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
