"""The ledger contract, on the real stores: SQLite (a file of the test's own) and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from sidecar.budget.ledger import Hold, Ledger
from sidecar.budget.stores.redis import RedisLedger
from sidecar.budget.stores.sqlite import SqliteDatabase, SqliteLedger
from tests.conftest import REDIS_URL, redis_keyspace


@pytest.fixture(params=["sqlite", "redis"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param == "sqlite":
        db = SqliteDatabase(str(tmp_path))
        store: Ledger = SqliteLedger(db)
        await store.start()
        try:
            yield store
        finally:
            await db.close()
        return
    async with redis_keyspace() as prefix:
        redis = RedisLedger(REDIS_URL, prefix)
        try:
            yield redis
        finally:
            await redis.aclose()


def _hold(key: str, cap: int) -> Hold:
    return Hold(key, cap, None)


async def test_a_reservation_that_does_not_fit_holds_nothing(ledger: Ledger) -> None:
    holds = [_hold("global@0", 100), _hold("group@0", 30)]
    assert await ledger.reserve("a", holds, 25, 1e12) is None
    refusal = await ledger.reserve("b", holds, 10, 1e12)
    assert refusal is not None
    assert (refusal.key, refusal.spent, refusal.reserved) == ("group@0", 0, 25)
    usage = await ledger.usage(["global@0", "group@0"])
    assert usage["global@0"].reserved == 25  # the refused one left no trace on the other cap


async def test_concurrent_reservations_never_pass_the_cap(ledger: Ledger) -> None:
    holds = [_hold("cap@0", 1000)]
    results = await asyncio.gather(*(ledger.reserve(f"r{i}", holds, 30, 1e12) for i in range(100)))
    granted = [i for i, refusal in enumerate(results) if refusal is None]
    assert len(granted) == 1000 // 30
    usage = (await ledger.usage(["cap@0"]))["cap@0"]
    assert usage.reserved == 30 * len(granted) <= 1000


async def test_settling_is_idempotent(ledger: Ledger) -> None:
    holds = [_hold("cap@0", 100)]
    assert await ledger.reserve("call", holds, 60, 1e12) is None
    assert await ledger.settle("call", ["cap@0"], 7) is True
    assert await ledger.settle("call", ["cap@0"], 7) is False
    usage = (await ledger.usage(["cap@0"]))["cap@0"]
    assert (usage.spent, usage.reserved) == (7, 0)
    # The released room is usable again.
    assert await ledger.reserve("next", holds, 93, 1e12) is None


async def test_an_expired_reservation_is_charged_in_full(ledger: Ledger) -> None:
    holds = [_hold("cap@0", 100)]
    assert await ledger.reserve("orphan", holds, 40, 1000.0) is None
    assert await ledger.reserve("alive", holds, 10, 5000.0) is None
    assert await ledger.expire(999.0) == 0
    assert await ledger.expire(1000.0) == 1
    usage = (await ledger.usage(["cap@0"]))["cap@0"]
    assert (usage.spent, usage.reserved) == (40, 10)
    # A late settlement by a sidecar that was only slow changes nothing.
    assert await ledger.settle("orphan", ["cap@0"], 1) is False


async def test_windows_are_separate_counters(ledger: Ledger) -> None:
    old, new = [_hold("cap@100", 50)], [_hold("cap@200", 50)]
    assert await ledger.reserve("late", old, 50, 1e12) is None
    assert await ledger.reserve("fresh", new, 20, 1e12) is None
    # Settling the old window's call after the rollover leaves the new window alone.
    assert await ledger.settle("late", ["cap@100"], 45)
    usage = await ledger.usage(["cap@100", "cap@200"])
    assert (usage["cap@100"].spent, usage["cap@200"].reserved) == (45, 20)


async def test_redis_keys_share_one_hash_slot(redis_prefix: str) -> None:
    """Every key a script touches lives in one slot, so the scripts run on Redis Cluster."""
    ledger = RedisLedger(REDIS_URL, redis_prefix)
    try:
        holds = [_hold("global@1", 10), _hold("caller:x@1", 10)]
        assert await ledger.reserve("r1", holds, 1, 1e12) is None
        client = ledger._client
        keys = [key async for key in client.scan_iter(match="{" + redis_prefix + "}*")]
        assert len(keys) == 4  # two counters, the reservation, the expiry set
        assert len({key_slot(key) for key in keys}) == 1
    finally:
        await ledger.aclose()
