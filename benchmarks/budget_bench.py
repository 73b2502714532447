"""What budgets add to a call: planning with the budget view, reservation and settlement.

    python -m benchmarks.budget_bench [--quick]

For a cloud deployment under three caps (global, model group, caller), one call is
timed as: plan() with the budget view, reserve() and settle(), on the SQLite ledger
(a file) and on the local Redis (127.0.0.1:6379); plan() without a view is timed beside
it, so the planning share is a difference in the same run. A local call is timed the
same way, and the ledger operations it caused are counted: none. Last, the spend log
writer's throughput into the local PostgreSQL (127.0.0.1:5432, a database of its own,
dropped afterwards), from the first record queued to the last one written. A store
that is not reachable is left out of the figures and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvloop

from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.budget import Budgets
from sidecar.budget.ledger import Hold, Ledger, Refusal, StoreUnavailable, Usage
from sidecar.budget.spendlog import SpendLog
from sidecar.config import SidecarConfig, parse_config
from sidecar.errors import LedgerUnavailable
from sidecar.routing import compile_routing, plan
from sidecar.types import ChatRequest, GenerationParams, Message, SpendRecord
from sidecar.types import Usage as Tokens

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
COUNTS = {Scale.FULL: 5000, Scale.QUICK: 1000, Scale.SMOKE: 50}
RECORDS = {Scale.FULL: 50_000, Scale.QUICK: 10_000, Scale.SMOKE: 500}


def _config(ledger: dict[str, Any], database_url: str | None = None) -> SidecarConfig:
    general: dict[str, Any] = {"max_budget": 1e6, "budget_duration": "1mo"}
    budget: dict[str, Any] = {"default_caller": {"max_budget": 1e6, "budget_duration": "1d"}}
    budget.update(ledger)
    if database_url:
        general["database_url"] = database_url
    return parse_config(
        {
            "model_list": [
                {
                    "model_name": "cloud",
                    "litellm_params": {"model": "gpt-4o-mini", "api_key": "sk-bench"},
                    "model_info": {"max_budget": 1e6, "budget_duration": "30d"},
                },
                {
                    "model_name": "local",
                    "litellm_params": {
                        "model": "ollama/llama3.2",
                        "api_base": "http://127.0.0.1:11434",
                    },
                },
            ],
            "general_settings": general,
            "budget": budget,
            "health": {"probe_interval": 0},
        },
        source="bench",
        env={},
    )


class _Counting:
    """The ledger of a Budgets, counting the operations callers asked of it."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.calls = 0

    async def start(self) -> None:
        await self.inner.start()

    async def reserve(
        self, reservation: str, holds: Sequence[Hold], amount: int, expires_at: float
    ) -> Refusal | None:
        self.calls += 1
        return await self.inner.reserve(reservation, holds, amount, expires_at)

    async def settle(self, reservation: str, keys: Sequence[str], actual: int) -> bool:
        self.calls += 1
        return await self.inner.settle(reservation, keys, actual)

    async def usage(self, keys: Sequence[str]) -> Mapping[str, Usage]:
        return await self.inner.usage(keys)

    async def expire(self, now: float) -> int:
        return await self.inner.expire(now)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _time_calls(config: SidecarConfig, count: int) -> dict[str, float]:
    budgets = Budgets(config, data_dir=tempfile.mkdtemp(prefix="budget-bench-"))
    counting = _Counting(budgets.ledger)
    budgets.ledger = counting
    await budgets.start()
    policy = compile_routing(config)
    request = ChatRequest(
        "cloud",
        (Message("user", "Summarise the open questions of last week's review."),),
        GenerationParams(max_tokens=200),
        metadata={"caller": "bench"},
        request_id="bench",
    )
    local = ChatRequest("local", request.messages, request.params, metadata=request.metadata)
    cloud = config.groups["cloud"].deployments[0]
    usage = Tokens(20, 180)
    added: list[float] = []
    ledger: list[float] = []
    planning: list[float] = []
    bare: list[float] = []
    local_added: list[float] = []
    clock = time.perf_counter
    try:
        for i in range(count + count // 10):
            t0 = clock()
            plan(request, config, policy)
            t1 = clock()
            plan(request, config, policy, None, budgets.view())
            t2 = clock()
            ticket, _ = await budgets.reserve(cloud, request, 60.0)
            await budgets.settle(ticket, usage, 1, 10, billed=True)
            t3 = clock()
            plan(local, config, policy)
            t4 = clock()
            plan(local, config, policy, None, budgets.view())
            t5 = clock()
            if i >= count // 10:  # after the warm-up
                bare.append(t1 - t0)
                planning.append(t2 - t1)
                ledger.append(t3 - t2)
                added.append((t2 - t1) - (t1 - t0) + (t3 - t2))
                local_added.append((t5 - t4) - (t4 - t3))
        cloud_ops = counting.calls
        before = counting.calls
        for _ in range(100):
            plan(local, config, policy, None, budgets.view())
        local_ops = counting.calls - before
    finally:
        await budgets.aclose()
    return {
        "added_p50_us": _us(added, 50),
        "added_p99_us": _us(added, 99),
        "reserve_settle_p50_us": _us(ledger, 50),
        "reserve_settle_p99_us": _us(ledger, 99),
        "plan_with_view_p50_us": _us(planning, 50),
        "plan_without_view_p50_us": _us(bare, 50),
        "local_added_p50_us": _us(local_added, 50),
        "ledger_ops_per_cloud_call": cloud_ops / (count + count // 10),
        "ledger_ops_per_local_call": local_ops / 100,
    }


def _us(values: list[float], q: int) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index] * 1e6


@asynccontextmanager
async def _database() -> AsyncIterator[str]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _spend_log_rate(records: int) -> dict[str, float]:
    async with _database() as dsn:
        budgets = Budgets(_config({}, dsn), data_dir=tempfile.mkdtemp(prefix="budget-bench-"))
        await budgets.start()
        log = budgets.spend_log
        try:
            # Connect and create the table first: the figure is the steady rate.
            await log.put(_record(-1))
            await _written(log, 1)
            started = time.perf_counter()
            for i in range(records):
                await log.put(_record(i))
            await _written(log, records + 1)
            elapsed = time.perf_counter() - started
        finally:
            await budgets.aclose()
    return {"records_per_s": records / elapsed, "records": float(records)}


async def _written(log: SpendLog, count: int, within: float = 120.0) -> None:
    end = time.monotonic() + within
    while log.written < count:
        if time.monotonic() > end:
            raise TimeoutError(f"the spend log wrote {log.written} of {count} records")
        await asyncio.sleep(0.001)


def _record(i: int) -> SpendRecord:
    now = time.time()
    return SpendRecord(
        f"bench-{i}", now, now + 0.5, "bench", "cloud", "gpt-4o-mini", "cloud/0", "openai",
        "cloud", 20, 180, 0, 0.0001, 120.0, 500.0, "ok", 1, 0, "alias cloud",
    )  # fmt: skip


async def run(context: Context) -> Outcome:
    count = COUNTS[context.scale]
    outcome = Outcome()
    skipped: list[str] = []
    for name, ledger in (
        ("sqlite", {"ledger": "sqlite"}),
        (
            "redis",
            {
                "ledger": "redis",
                "redis_url": REDIS_URL,
                "redis_prefix": f"bench-{uuid.uuid4().hex[:8]}",
            },
        ),
    ):
        try:
            figures = await _time_calls(_config(ledger), count)
        except (LedgerUnavailable, StoreUnavailable, OSError) as exc:
            # A store that is not there: say so, and measure the rest.
            skipped.append(f"{name}: {type(exc).__name__}")
            context.progress.advance(f"{name} skipped")
            continue
        outcome.data[name] = figures
        for key, value in figures.items():
            outcome.metrics[f"budget.{name}.{key}"] = value
        context.progress.advance(name)
    try:
        rate = await _spend_log_rate(RECORDS[context.scale])
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        skipped.append(f"postgres: {type(exc).__name__}")
    else:
        outcome.data["spend_log"] = rate
        outcome.metrics["budget.spend_log.records_per_s"] = rate["records_per_s"]
    context.progress.advance("spend log")
    outcome.data["skipped"] = skipped
    outcome.data["calls"] = count
    return outcome


def markdown(data: Mapping[str, Any]) -> str:
    lines = [
        f"One cloud call under three caps, {data.get('calls', 0)} timed calls per ledger "
        "(µs; added = plan with the budget view - plan without + reserve + settle).",
        "",
        "| ledger | added p50 | added p99 | reserve+settle p50 | reserve+settle p99 "
        "| local call added p50 | ledger ops per local call |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("sqlite", "redis"):
        f = data.get(name)
        if f:
            lines.append(
                f"| {name} | {f['added_p50_us']:.0f} | {f['added_p99_us']:.0f} | "
                f"{f['reserve_settle_p50_us']:.0f} | {f['reserve_settle_p99_us']:.0f} | "
                f"{f['local_added_p50_us']:.1f} | {f['ledger_ops_per_local_call']:.0f} |"
            )
    rate = data.get("spend_log")
    if rate:
        lines += ["", f"Spend log into PostgreSQL: {rate['records_per_s']:,.0f} records/s."]
    if data.get("skipped"):
        lines += ["", "Not measured (store unreachable): " + ", ".join(data["skipped"])]
    return "\n".join(lines)


SCENARIO = Scenario(
    name="budget",
    title="What budgets add to a call",
    steps=lambda scale: 3,
    run=run,
    time_limit=lambda scale: 300.0 if scale is Scale.FULL else 60.0,
    markdown=markdown,
)


class _Quiet:
    def advance(self, note: str = "") -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = Scale.QUICK if args.quick else Scale.FULL
    outcome = uvloop.run(run(Context(scale, _Quiet())))
    print(markdown(outcome.data))


if __name__ == "__main__":
    main()
