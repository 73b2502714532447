"""What the sidecar adds: the same chats direct to a simulated upstream, through gRPC and
through the HTTP bridge, in one run.

    python -m benchmarks.overhead [--quick]      (or: python -m benchmarks --only overhead)

Nine processes: simulated Ollama, OpenAI, Anthropic and Gemini upstreams, the sidecar
(gRPC, and the HTTP bridge on the same engine), the two floors (benchmarks/floors.py: a
bare grpc.aio relay and a bare aiohttp relay of the same upstreams) and this load
generator. Six paths, each against the baseline that calls the same upstream directly:

    grpc       gRPC StreamChat/Chat -> sidecar -> Ollama NDJSON      vs  direct-ollama
    http       OpenAI SSE/JSON -> bridge -> sidecar -> OpenAI SSE    vs  direct-openai
    anthropic  gRPC StreamChat -> sidecar -> Anthropic Messages SSE  vs  direct-anthropic
    gemini     gRPC StreamChat -> sidecar -> Gemini SSE              vs  direct-gemini
    messages   Anthropic SSE -> bridge's Messages door -> sidecar
               -> Anthropic Messages SSE                            vs  direct-anthropic
    responses  Responses SSE -> bridge's Responses door -> sidecar
               -> OpenAI SSE                                        vs  direct-openai

The anthropic, gemini, messages and responses paths are measured streaming only (the
translations are what they add) and take no part in the open-loop rate steps. The grpc
and http paths are also measured through their floor, in the same alternation (direct,
floor, relayed), so that each added figure splits into the floor's (what the transport
costs any Python relay) and the sidecar's own share on top.

For each upstream profile (switched at run time through the simulators' control
endpoint), mode (stream, unary) and concurrency, direct and relayed rounds
alternate so drift on a noisy machine hits both alike; the figures are
differences of percentiles from the same run. Sidecar CPU is read from the
sidecar process itself (/proc), so the load generator's CPU does not count.

The local-8b profile pins the seed's ranges to their middle (45 ms to the first
token, 100 tokens/s): a uniformly random 30-60 ms first token would add more
noise to a p99 than the milliseconds being measured.

The model-paced profile draws the seed's ranges per answer (30-60 ms, 80-120 tokens/s)
at 50 and 200 streams. Bursts: rounds in which every caller starts at the same instant
(10 and 50 callers, local-8b), as after a deploy or in a retry storm.

Then, open loop at stepped request rates against local-8b, the highest rate at
which the added p99 time to first token stays under 2 ms (no failures either).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import uvloop

from benchmarks import procs
from benchmarks.load import (
    CALL_TIMEOUT,
    Call,
    Sample,
    anthropic_stream,
    closed_loop,
    gemini_stream,
    grpc_stream,
    grpc_unary,
    ollama_direct,
    ollama_unary,
    open_loop,
    openai_stream,
    openai_unary,
    responses_stream,
)
from benchmarks.stats import cdf, ms, summary
from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

OLLAMA_MODEL = "llama3.2:8b"
GRPC_ALIAS = "fast-local"
OPENAI_MODEL = "qwen2.5"
OPENAI_ALIAS = "vllm-local"
CLAUDE_MODEL = "claude-sonnet-4-20250514"
CLAUDE_ALIAS = "cloud-reasoning"
GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_ALIAS = "cloud-gemini"
UPSTREAM_KEY = "sk-bench-upstream"
MASTER_KEY = "sk-bench-master"
# path -> the baseline speaking the same client protocol straight to the upstream
BASELINE = {
    "grpc": "direct-ollama",
    "http": "direct-openai",
    "anthropic": "direct-anthropic",
    "gemini": "direct-gemini",
    "messages": "direct-anthropic",
    "responses": "direct-openai",
}
# path -> the reference relay of the same transport (benchmarks/floors.py): what is left
# of the path's added time and CPU once the floor's is taken away is the sidecar's own.
FLOOR = {"grpc": "grpc-floor", "http": "http-floor"}
PATHS = tuple(BASELINE)
STREAM_ONLY = frozenset({"anthropic", "gemini", "messages", "responses"})
RATE_PATHS = ("grpc", "http")
MODES = ("stream", "unary")
# Upstream profiles, in the simulators' control-endpoint form.
PROFILES: Mapping[str, Mapping[str, Any]] = {
    "instant": {"ttft": 0, "tokens_per_second": None, "answer_tokens": 20},
    "local-8b": {"ttft": 0.045, "tokens_per_second": 100, "answer_tokens": 20},
    # The seed's ranges themselves, drawn per answer: the tail under load.
    "model-paced": {"ttft": [0.030, 0.060], "tokens_per_second": [80, 120], "answer_tokens": 20},
    # A fast upstream (1,000 tokens/s): every token its own read unless the relay coalesces.
    "fast": {"ttft": 0, "tokens_per_second": 1000, "answer_tokens": 20},
}
PACED_LEVELS = (50, 200)
BURST_PROFILE = "local-8b"  # fixed timing: callers that start together stay together
# Seconds one local-8b stream takes: the first token, then 19 more at 100 per second.
LOCAL_8B_CYCLE = 0.045 + 19 / 100
ALL_LEVELS = (1, 10, 50, 200)  # concurrent calls
RATE_PROFILE = "local-8b"
ADDED_P99_LIMIT_MS = 2.0


@dataclass(frozen=True, slots=True)
class Plan:
    # (profile, mode, concurrency levels), in the order they are measured
    grid: tuple[tuple[str, str, tuple[int, ...]], ...]
    rounds: int  # alternating direct/relayed rounds per point
    calls: int  # calls per side and round (also bounded in time)
    seconds: Mapping[str, float]  # time bound of one side's round, per profile
    single_seconds: float  # the same for one caller, who needs longer for a sample
    rates: tuple[float, ...]  # open-loop steps, requests per second
    rate_rounds: int  # alternating rounds per step
    rate_seconds: float  # arrivals of one side's round of a step last this long
    warmup: int
    # Bursts: every caller of a level starts at the same instant, `bursts` times a round.
    burst_levels: tuple[int, ...] = (10, 50)
    burst_rounds: int = 5
    bursts: int = 6

    def points(self) -> list[tuple[str, str, int, str]]:
        return [
            (profile, mode, concurrency, path)
            for profile, mode, levels in self.grid
            for concurrency in levels
            for path in PATHS
            if mode == "stream" or path not in STREAM_ONLY
        ]

    def widest(self) -> int:
        return max(level for _, _, levels in self.grid for level in levels)

    def round_seconds(self, profile: str, concurrency: int) -> float:
        return self.single_seconds if concurrency == 1 else self.seconds[profile]


PLANS: Mapping[Scale, Plan] = {
    Scale.FULL: Plan(
        grid=(
            *((p, m, ALL_LEVELS) for p in ("instant", "local-8b") for m in MODES),
            ("model-paced", "stream", PACED_LEVELS),
        ),
        rounds=5,
        calls=1000,
        seconds={"instant": 1.0, "local-8b": 1.5, "model-paced": 1.5},
        single_seconds=4.0,
        rates=(10, 25, 50, 100, 200, 300, 400, 600, 800),
        rate_rounds=3,
        rate_seconds=1.5,
        warmup=400,
        burst_rounds=7,
        bursts=10,
    ),
    Scale.QUICK: Plan(
        # Fewer unary points: against local-8b a whole answer repeats the stream's total time.
        grid=(
            ("instant", "stream", ALL_LEVELS),
            ("instant", "unary", (1, 50)),
            ("local-8b", "stream", ALL_LEVELS),
            ("model-paced", "stream", PACED_LEVELS),
        ),
        rounds=3,
        calls=170,
        seconds={"instant": 0.25, "local-8b": 0.5, "model-paced": 0.5},
        single_seconds=0.8,
        rates=(25, 100, 400),
        rate_rounds=1,
        rate_seconds=1.0,
        warmup=400,
        burst_rounds=3,
        bursts=4,
    ),
    Scale.SMOKE: Plan(
        grid=(
            *((p, m, (1, 50)) for p in ("instant", "local-8b") for m in MODES),
            ("model-paced", "stream", (50,)),
        ),
        rounds=1,
        calls=5,
        seconds={"instant": 0.3, "local-8b": 0.3, "model-paced": 0.3},
        single_seconds=0.3,
        rates=(20,),
        rate_rounds=1,
        rate_seconds=0.3,
        warmup=2,
        burst_levels=(50,),
        burst_rounds=1,
        bursts=1,
    ),
}


@dataclass(slots=True)
class Side:
    rounds: list[list[Sample]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of its rounds
    cpu: float = 0.0  # sidecar CPU seconds during its rounds (relayed sides only)
    generator_cpu: float = 0.0  # this load generator's CPU seconds during its rounds
    # The simulator's CPU seconds during the direct rounds: what any Python server writing
    # the same paced stream pays on this machine (every token a wake-up), for scale.
    upstream_cpu: float = 0.0

    @property
    def samples(self) -> list[Sample]:
        return [s for r in self.rounds for s in r]

    def figures(self) -> dict[str, Any]:
        """Counts, p50s and CPU over every round; each p99 is the median of the rounds'
        p99s, so that one stall of a shared machine does not decide it."""
        samples = self.samples
        ok = sum(s.ok for s in samples)
        out: dict[str, Any] = summary(samples)
        for key in ("ttft_p99_ms", "total_p99_ms"):
            out[f"{key[:-3]}_pooled_ms"] = out[key]
            per_round = [summary(r)[key] for r in self.rounds]
            finite = [v for v in per_round if math.isfinite(v)]
            out[key] = statistics.median(finite) if finite else math.nan
        out["rate_per_s"] = ok / self.seconds if self.seconds else math.nan
        out["cpu_s_per_1000"] = self.cpu / ok * 1000 if ok else math.nan
        out["generator_cpu_s_per_1000"] = self.generator_cpu / ok * 1000 if ok else math.nan
        out["upstream_cpu_s_per_1000"] = self.upstream_cpu / ok * 1000 if ok else math.nan
        out["ttft_cdf_ms"] = cdf(ms(s.ttft for s in samples if s.ok))
        return out


class Meter:
    """Wall time and the CPU of the load generator and of one other process (the sidecar
    for a relayed round, the simulator for a direct one) over a round, added to a Side."""

    def __init__(self, side: Side, process: procs.Proc, relayed: bool) -> None:
        self._side, self._process, self._relayed = side, process, relayed

    def __enter__(self) -> None:
        self._wall, self._own = time.perf_counter(), time.process_time()
        self._cpu = self._process.cpu_seconds()

    def __exit__(self, *exc_info: object) -> None:
        self._side.seconds += time.perf_counter() - self._wall
        self._side.generator_cpu += time.process_time() - self._own
        cpu = self._process.cpu_seconds() - self._cpu
        if self._relayed:
            self._side.cpu += cpu
        else:
            self._side.upstream_cpu += cpu


@dataclass(slots=True)
class Point:
    path: str
    mode: str
    profile: str
    concurrency: int
    direct: Side = field(default_factory=Side)
    relayed: Side = field(default_factory=Side)
    # The reference relay of the same transport, measured in the same alternation.
    floor: Side | None = None

    def __post_init__(self) -> None:
        if self.floor is None and self.path in FLOOR:
            self.floor = Side()

    def figures(self) -> dict[str, Any]:
        direct, relayed = self.direct.figures(), self.relayed.figures()
        out = {
            "path": self.path,
            "mode": self.mode,
            "profile": self.profile,
            "concurrency": self.concurrency,
            "direct": direct,
            "relayed": relayed,
            "added": _minus(relayed, direct),
        }
        if self.floor is not None:
            floor = self.floor.figures()
            own = _minus(relayed, floor)
            own["cpu_s_per_1000"] = relayed["cpu_s_per_1000"] - floor["cpu_s_per_1000"]
            # A short round can read no CPU at all (the clock ticks every 10 ms).
            floor_cpu = floor["cpu_s_per_1000"]
            own["cpu_ratio"] = relayed["cpu_s_per_1000"] / floor_cpu if floor_cpu else math.nan
            out |= {"floor": floor, "floor_added": _minus(floor, direct), "own": own}
        return out


_LATENCIES = ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")


def _minus(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    return {key: a[key] - b[key] for key in _LATENCIES}


@dataclass(slots=True)
class Stack:
    """The running processes and one client of each kind against them."""

    sidecar: procs.Proc
    ollama: procs.Proc
    openai: procs.Proc
    anthropic: procs.Proc
    gemini: procs.Proc
    floors: dict[str, procs.Proc]  # path -> its reference relay
    session: aiohttp.ClientSession
    calls: dict[tuple[str, str], Call]  # (side, mode) -> call

    def upstream(self, path: str) -> procs.Proc:
        """The simulator that the path's baseline calls, and that serves the path too."""
        by_baseline = {
            "direct-ollama": self.ollama,
            "direct-openai": self.openai,
            "direct-anthropic": self.anthropic,
            "direct-gemini": self.gemini,
        }
        return by_baseline[BASELINE[path]]


def config(
    ollama_root: str, openai_root: str, anthropic_root: str, gemini_root: str
) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": GRPC_ALIAS,
                "litellm_params": {"model": f"ollama/{OLLAMA_MODEL}", "api_base": ollama_root},
            },
            {
                "model_name": OPENAI_ALIAS,
                "litellm_params": {
                    "model": f"openai/{OPENAI_MODEL}",
                    "api_base": f"{openai_root}/v1",
                    "api_key": UPSTREAM_KEY,
                },
            },
            {
                "model_name": CLAUDE_ALIAS,
                "litellm_params": {
                    "model": f"anthropic/{CLAUDE_MODEL}",
                    "api_base": anthropic_root,
                    "api_key": UPSTREAM_KEY,
                },
            },
            {
                "model_name": GEMINI_ALIAS,
                "litellm_params": {
                    "model": f"gemini/{GEMINI_MODEL}",
                    "api_base": gemini_root,
                    "api_key": UPSTREAM_KEY,
                },
            },
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


@asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    async with (
        procs.simulator("ollama", "instant") as ollama,
        procs.simulator("openai", "instant", "--api-key", UPSTREAM_KEY) as openai,
        procs.simulator("anthropic", "instant", "--api-key", UPSTREAM_KEY) as anthropic,
        procs.simulator("gemini", "instant", "--api-key", UPSTREAM_KEY) as gemini,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            roots = (ollama.address, openai.address, anthropic.address, gemini.address)
            path = procs.write_config(tmp, config(*roots))
            async with (
                procs.sidecar(path, http=True) as sidecar,
                procs.floor("grpc", ollama.address) as grpc_floor,
                procs.floor("http", openai.address, "--api-key", UPSTREAM_KEY) as http_floor,
                aiohttp.ClientSession(connector=_connector()) as session,
                grpc.aio.insecure_channel(sidecar.address) as channel,
                grpc.aio.insecure_channel(grpc_floor.address) as floor_channel,
            ):
                stub = pb_grpc.RouterStub(channel)
                floor_stub = pb_grpc.RouterStub(floor_channel)
                http_floor_root = f"{http_floor.address}/v1"
                bridge = f"{sidecar.more['http']}/v1"
                upstream = f"{openai.address}/v1"
                key, master = UPSTREAM_KEY, MASTER_KEY
                model, alias = OPENAI_MODEL, OPENAI_ALIAS
                calls = {
                    ("direct-ollama", "stream"): ollama_direct(
                        session, ollama.address, OLLAMA_MODEL
                    ),
                    ("direct-ollama", "unary"): ollama_unary(session, ollama.address, OLLAMA_MODEL),
                    ("grpc", "stream"): grpc_stream(stub, GRPC_ALIAS, MASTER_KEY),
                    ("grpc", "unary"): grpc_unary(stub, GRPC_ALIAS, MASTER_KEY),
                    ("direct-openai", "stream"): openai_stream(session, upstream, model, key),
                    ("direct-openai", "unary"): openai_unary(session, upstream, model, key),
                    ("http", "stream"): openai_stream(session, bridge, alias, master),
                    ("http", "unary"): openai_unary(session, bridge, alias, master),
                    ("direct-anthropic", "stream"): anthropic_stream(
                        session, anthropic.address, CLAUDE_MODEL, key
                    ),
                    ("anthropic", "stream"): grpc_stream(stub, CLAUDE_ALIAS, MASTER_KEY),
                    ("direct-gemini", "stream"): gemini_stream(
                        session, gemini.address, GEMINI_MODEL, key
                    ),
                    ("gemini", "stream"): grpc_stream(stub, GEMINI_ALIAS, MASTER_KEY),
                    ("messages", "stream"): anthropic_stream(
                        session, sidecar.more["http"], CLAUDE_ALIAS, master
                    ),
                    ("responses", "stream"): responses_stream(session, bridge, alias, master),
                    # The floors get the same requests, key and all (they ignore both).
                    ("grpc-floor", "stream"): grpc_stream(floor_stub, GRPC_ALIAS, MASTER_KEY),
                    ("grpc-floor", "unary"): grpc_unary(floor_stub, GRPC_ALIAS, MASTER_KEY),
                    ("http-floor", "stream"): openai_stream(
                        session, http_floor_root, alias, master
                    ),
                    ("http-floor", "unary"): openai_unary(session, http_floor_root, alias, master),
                }
                floors = {"grpc": grpc_floor, "http": http_floor}
                yield Stack(sidecar, ollama, openai, anthropic, gemini, floors, session, calls)


def _connector() -> aiohttp.TCPConnector:
    # No cap on connections, and idle ones kept between the points that use them.
    return aiohttp.TCPConnector(limit=0, keepalive_timeout=600)


async def set_profile(s: Stack, profile: str) -> None:
    for sim in (s.ollama, s.openai, s.anthropic, s.gemini):
        await procs.configure(s.session, sim.address, profile=dict(PROFILES[profile]))


async def measure_point(s: Stack, plan: Plan, point: Point) -> None:
    """Alternate direct, floor and relayed closed-loop rounds."""
    sides = _sides(s, point)
    seconds = plan.round_seconds(point.profile, point.concurrency)
    ramp = 0.0 if point.profile == "instant" else LOCAL_8B_CYCLE
    for _, call, _ in sides:
        await _reconnect(call, point.concurrency)
    for _ in range(plan.rounds):
        for side, call, meter in sides:
            with meter:
                side.rounds.append(
                    await closed_loop(call, point.concurrency, plan.calls, seconds, ramp)
                )


async def measure_burst(s: Stack, plan: Plan, point: Point) -> None:
    """Rounds of `plan.bursts` bursts: each one call per caller, every caller starting at
    the same instant (as after a deploy or in a retry storm), the next burst once the last
    call of this one ended. Sides alternate round by round, as at the other points."""
    sides = _sides(s, point)
    n = point.concurrency
    for _, call, _ in sides:
        await _reconnect(call, n)
    for _ in range(plan.burst_rounds):
        for side, call, meter in sides:
            samples: list[Sample] = []
            with meter:
                for _ in range(plan.bursts):
                    samples += await closed_loop(call, n, n, CALL_TIMEOUT)
            side.rounds.append(samples)


def _sides(s: Stack, point: Point) -> list[tuple[Side, Call, Meter]]:
    """(side, its call, its meter) for each side of a point, in the order they alternate."""
    path = point.path
    mode = "stream" if point.mode == "burst" else point.mode  # a burst is of streams
    sides = [
        (point.direct, s.calls[BASELINE[path], mode], Meter(point.direct, s.upstream(path), False))
    ]
    if point.floor is not None:
        floor = s.floors[path]
        sides.append((point.floor, s.calls[FLOOR[path], mode], Meter(point.floor, floor, True)))
    sides.append((point.relayed, s.calls[path, mode], Meter(point.relayed, s.sidecar, True)))
    return sides


async def rate_steps(s: Stack, plan: Plan, path: str, context: Context) -> list[dict[str, Any]]:
    """Open-loop steps of rising rate until the added p99 TTFT passes the limit."""
    steps = []
    for done, rate in enumerate(plan.rates, 1):
        point = Point(path, "stream", RATE_PROFILE, 0)
        requests = int(rate * plan.rate_seconds) + 1
        for call in (BASELINE[path], path):
            await _reconnect(s.calls[call, "stream"], math.ceil(rate * LOCAL_8B_CYCLE))
        for _ in range(plan.rate_rounds):
            for side, call in ((point.direct, BASELINE[path]), (point.relayed, path)):
                relayed = side is point.relayed
                with Meter(side, s.sidecar if relayed else s.upstream(path), relayed):
                    side.rounds.append(
                        await open_loop(s.calls[call, "stream"], rate, requests, plan.rate_seconds)
                    )
        figures = point.figures()
        figures["rate"] = rate
        figures["passed"] = (
            figures["direct"]["failures"] + figures["relayed"]["failures"] == 0
            and figures["added"]["ttft_p99_ms"] < ADDED_P99_LIMIT_MS
        )
        steps.append(figures)
        context.progress.advance(f"{path} open loop {rate:g}/s")
        if not figures["passed"]:
            for _ in plan.rates[done:]:
                context.progress.advance(f"{path} open loop: stopped")
            break
    return steps


async def _reconnect(call: Call, concurrency: int) -> None:
    """One unmeasured call per caller, so that the connections a round needs are open: servers
    close idle ones (uvicorn after 5 s), and opening hundreds at once overflows a listen
    backlog, which costs the unlucky ones a 1 s SYN retry."""
    await closed_loop(call, concurrency, concurrency, 10)


def max_rate(steps: Sequence[Mapping[str, Any]]) -> float:
    """The highest stepped rate that passed, all lower ones passing too (0 if none)."""
    best = 0.0
    for step in steps:
        if not step["passed"]:
            break
        best = float(step["rate"])
    return best


async def run(context: Context) -> Outcome:
    plan = PLANS[context.scale]
    points: list[dict[str, Any]] = []
    rates: dict[str, list[dict[str, Any]]] = {}
    async with stack() as s:
        # Warm at the highest concurrency, so that every connection a point needs is open
        # (opening hundreds at once overflows listen backlogs: 1 s SYN retries).
        widest = plan.widest()
        for call in s.calls.values():
            await closed_loop(call, widest, max(plan.warmup, widest), 10)
        profile = ""
        for profile_name, mode, concurrency, path in plan.points():
            if profile_name != profile:
                profile = profile_name
                await set_profile(s, profile)
            point = Point(path, mode, profile, concurrency)
            await measure_point(s, plan, point)
            points.append(point.figures())
            context.progress.advance(f"{path} {mode} {profile} x{concurrency}")
        await set_profile(s, BURST_PROFILE)
        for concurrency in plan.burst_levels:
            for path in RATE_PATHS:
                point = Point(path, "burst", BURST_PROFILE, concurrency)
                await measure_burst(s, plan, point)
                points.append(point.figures())
                context.progress.advance(f"{path} burst x{concurrency}")
        await set_profile(s, RATE_PROFILE)
        for path in RATE_PATHS:
            rates[path] = await rate_steps(s, plan, path, context)
    return Outcome(metrics(points, rates), {"points": points, "rates": rates})


def metrics(
    points: Sequence[Mapping[str, Any]], rates: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, float]:
    out: dict[str, float] = {}
    stats = ("n", "failures", "ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")
    for p in points:
        where = f"{p['mode']}.{p['profile']}.c{p['concurrency']}"
        sides = [(BASELINE[p["path"]], p["direct"]), (p["path"], p["relayed"])]
        if "floor" in p:
            sides.append((FLOOR[p["path"]], p["floor"]))
        for side, figures in sides:
            for key in (*stats, "rate_per_s"):
                out[f"overhead.{side}.{where}.{key}"] = figures[key]
        out[f"overhead.{p['path']}.{where}.cpu_s_per_1000"] = p["relayed"]["cpu_s_per_1000"]
        for key, value in p["added"].items():
            out[f"overhead.{p['path']}.{where}.added_{key}"] = value
        if "floor" in p:
            floor = FLOOR[p["path"]]
            out[f"overhead.{floor}.{where}.cpu_s_per_1000"] = p["floor"]["cpu_s_per_1000"]
            for key, value in p["floor_added"].items():
                out[f"overhead.{floor}.{where}.added_{key}"] = value
            for key, value in p["own"].items():
                out[f"overhead.{p['path']}.{where}.own_{key}"] = value
    for path, steps in rates.items():
        out[f"overhead.{path}.max_rate_under_2ms"] = max_rate(steps)
    return out


def steps(scale: Scale) -> int:
    plan = PLANS[scale]
    bursts = len(plan.burst_levels) * len(RATE_PATHS)
    return len(plan.points()) + bursts + len(RATE_PATHS) * len(plan.rates)


# -- the tables -----------------------------------------------------------------------------


def markdown(data: Mapping[str, Any]) -> str:
    lines = [
        "Milliseconds. *added* = relayed minus direct at the same percentile, same run "
        "(a p99 is the median of the p99s of the alternating rounds); "
        "*cpu* = sidecar CPU seconds per 1,000 relayed requests (= ms per request), read from "
        "the sidecar process; *(upstream)* = the simulator's CPU per direct request, what any "
        "Python server writing the same paced stream pays here (every token is a wake-up); "
        "*rate* = relayed requests per second completed in that round; "
        "*generator cpu* = this load generator's own CPU per 1,000 requests (all of it shares "
        "the same 2 cores, and a gRPC client costs more CPU than an NDJSON reader). "
        "*floor*: the same figure for the bare reference relay of the same transport "
        "(benchmarks/floors.py: grpc.aio on uvloop, or aiohttp, relaying the same upstream "
        "with no routing), measured in the same alternation; *own*: the sidecar's share on "
        "top of it (added = floor + own; cpu = floor + own, and in brackets cpu / floor cpu).",
        "",
        "| path | mode | profile | conc | n | fail | direct ttft p50 / p99 "
        "| added ttft p50 / p99 | = floor | + own | added total p50 / p99 "
        "| cpu s/1000 | = floor + own (x floor) | (upstream) | rate /s "
        "| generator cpu s/1000 direct / relayed |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in data["points"]:
        d, r, a = p["direct"], p["relayed"], p["added"]
        floor = own = cpu_split = "-"
        if "floor" in p:
            fa, o, f = p["floor_added"], p["own"], p["floor"]
            floor = f"{fa['ttft_p50_ms']:+.2f} / {fa['ttft_p99_ms']:+.2f}"
            own = f"{o['ttft_p50_ms']:+.2f} / {o['ttft_p99_ms']:+.2f}"
            cpu_split = (
                f"{f['cpu_s_per_1000']:.2f} {o['cpu_s_per_1000']:+.2f} (x{o['cpu_ratio']:.2f})"
            )
        lines.append(
            f"| {p['path']} | {p['mode']} | {p['profile']} | {p['concurrency']} | {r['n']} "
            f"| {d['failures'] + r['failures']} "
            f"| {d['ttft_p50_ms']:.2f} / {d['ttft_p99_ms']:.2f} "
            f"| {a['ttft_p50_ms']:+.2f} / {a['ttft_p99_ms']:+.2f} | {floor} | {own} "
            f"| {a['total_p50_ms']:+.2f} / {a['total_p99_ms']:+.2f} "
            f"| {r['cpu_s_per_1000']:.2f} | {cpu_split} | {d['upstream_cpu_s_per_1000']:.2f} "
            f"| {r['rate_per_s']:,.0f} "
            f"| {d['generator_cpu_s_per_1000']:.2f} / {r['generator_cpu_s_per_1000']:.2f} |"
        )
    lines += [
        "",
        f"Open loop against {RATE_PROFILE}, stream mode, rising arrival rate: the highest rate "
        f"at which the added p99 TTFT stays under {ADDED_P99_LIMIT_MS:g} ms with no failures "
        "(*generator late*: how far behind schedule this load generator started calls, "
        "the larger side; when it is large, the generator was the limit).",
        "",
        "| path | rate /s | n | fail | direct ttft p99 | added ttft p50 / p99 | cpu s/1000 "
        "| generator late p99 | passed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for path, rate_steps_ in data["rates"].items():
        for step in rate_steps_:
            d, r, a = step["direct"], step["relayed"], step["added"]
            lines.append(
                f"| {path} | {step['rate']:g} | {r['n']} | {d['failures'] + r['failures']} "
                f"| {d['ttft_p99_ms']:.2f} | {a['ttft_p50_ms']:+.2f} / {a['ttft_p99_ms']:+.2f} "
                f"| {r['cpu_s_per_1000']:.2f} "
                f"| {max(d['late_p99_ms'], r['late_p99_ms']):.2f} "
                f"| {'yes' if step['passed'] else 'no'} |"
            )
        lines.append(f"| **{path}: highest passing rate** | **{max_rate(rate_steps_):g}** |")
    return "\n".join(lines)


# The points whose floor / own split the run prints: (mode, profile, concurrency).
_SUMMARY = (
    ("stream", "local-8b", 1),
    ("stream", "instant", 50),
    ("stream", "model-paced", 50),
    ("burst", "local-8b", 50),
)


def split_summary(data: Mapping[str, Any]) -> str:
    """The floors and the sidecar's own share at the points the targets look at."""
    lines = [
        "added = floor (bare relay of the same transport) + own (the sidecar's share); ms",
        "",
        f"{'path':<5} {'point':<24} {'added ttft p50 / p99':>22} {'floor':>17} {'own':>17} "
        f"{'cpu/stream = floor + own':>30}",
    ]
    for p in data["points"]:
        if "floor" not in p or (p["mode"], p["profile"], p["concurrency"]) not in _SUMMARY:
            continue
        a, fa, o, f = p["added"], p["floor_added"], p["own"], p["floor"]
        point = f"{p['mode']} {p['profile']} x{p['concurrency']}"
        lines.append(
            f"{p['path']:<5} {point:<24} "
            f"{a['ttft_p50_ms']:>+10.2f} / {a['ttft_p99_ms']:<+9.2f}"
            f"{fa['ttft_p50_ms']:>+8.2f} / {fa['ttft_p99_ms']:<+7.2f}"
            f"{o['ttft_p50_ms']:>+8.2f} / {o['ttft_p99_ms']:<+7.2f}"
            f"{p['relayed']['cpu_s_per_1000']:>9.2f} = {f['cpu_s_per_1000']:.2f} "
            f"{o['cpu_s_per_1000']:+.2f} (x{o['cpu_ratio']:.2f})"
        )
    return "\n".join(lines)


SCENARIO = Scenario(
    name="overhead",
    title="What the sidecar adds: direct vs gRPC vs HTTP bridge (chat, Messages, Responses) "
    "vs Anthropic and Gemini translation",
    steps=steps,
    run=run,
    time_limit=lambda scale: {Scale.FULL: 2700.0, Scale.QUICK: 360.0, Scale.SMOKE: 90.0}[scale],
    markdown=markdown,
    summary=split_summary,
)


class _Quiet:
    def advance(self, note: str = "") -> None:
        pass


async def main(quick: bool) -> None:
    scale = Scale.QUICK if quick else Scale.FULL
    outcome = await run(Context(scale, _Quiet()))
    print(markdown(outcome.data))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per point")
    uvloop.run(main(parser.parse_args().quick))
