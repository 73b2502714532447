"""The embedded store: one SQLite file (WAL) in the data directory, or memory without one.

sqlite3 blocks, so every statement runs on one worker thread that owns the connection;
the event loop only awaits it. Reservations and settlements are `BEGIN IMMEDIATE`
transactions, so several sidecars sharing one data directory on a host share one budget
exactly too. The file holds the ledger, the spend log and, when PostgreSQL keeps the
spend log, the outbox of records it has not taken yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sidecar.budget.ledger import Hold, Refusal, StoreUnavailable, Usage
from sidecar.budget.records import COLUMNS, record_row, row_record
from sidecar.types import DailySpend, SpendQuery, SpendRecord

DB_FILE = "spend.sqlite3"
T = TypeVar("T")

_RECORD_COLUMNS = """
    request_id TEXT NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL,
    caller TEXT NOT NULL, model_group TEXT NOT NULL, model TEXT NOT NULL,
    deployment TEXT NOT NULL, provider TEXT NOT NULL, locality TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, cost REAL NOT NULL, ttft_ms REAL, latency_ms REAL NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, fallbacks INTEGER NOT NULL,
    route_reason TEXT NOT NULL, PRIMARY KEY (request_id, start_time)
"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS budget_counters (
    key TEXT PRIMARY KEY, spent INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0, expires_at INTEGER);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL, keys TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_expiry ON reservations (expires_at);
CREATE TABLE IF NOT EXISTS spend_logs ({_RECORD_COLUMNS});
CREATE INDEX IF NOT EXISTS spend_logs_start ON spend_logs (start_time);
CREATE TABLE IF NOT EXISTS spend_outbox ({_RECORD_COLUMNS});
"""
_PLACEHOLDERS = ", ".join("?" for _ in COLUMNS)
_NAMES = ", ".join(COLUMNS)

log = logging.getLogger("sidecar.budget.sqlite")


class SqliteDatabase:
    """One connection on one thread; `run` executes a function with it there."""

    def __init__(self, data_dir: str | None) -> None:
        self.path = ":memory:" if data_dir is None else os.path.join(data_dir, DB_FILE)
        self._data_dir = data_dir
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sidecar-sqlite")
        try:
            await self._submit(self._connect)
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open the spend database {self.path}: {exc}") from exc

    def _connect(self) -> None:
        if self._data_dir is not None:
            os.makedirs(self._data_dir, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed transaction survives a process crash; only an OS crash or a
        # power cut may take the last ones back.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the spend database is closed")
        try:
            return await self._submit(lambda: work(conn))
        except sqlite3.Error as exc:
            # The detail (a path, SQLite's words) is for the operator's log; the error may
            # reach a caller, so it names only what kind of failure it was.
            log.warning("SQLite spend database %s failed: %s", self.path, exc)
            raise StoreUnavailable(
                f"the SQLite spend database failed ({type(exc).__name__})"
            ) from exc

    async def _submit(self, work: Callable[[], T]) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)


def _transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class SqliteLedger:
    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        await self._db.open()

    async def reserve(
        self, reservation: str, holds: Sequence[Hold], amount: int, expires_at: float
    ) -> Refusal | None:
        def work(conn: sqlite3.Connection) -> Refusal | None:
            def reserve() -> Refusal | None:
                if conn.execute(
                    "SELECT 1 FROM reservations WHERE id = ?", (reservation,)
                ).fetchone():
                    return None
                for hold in holds:
                    row = conn.execute(
                        "SELECT spent, reserved FROM budget_counters WHERE key = ?", (hold.key,)
                    ).fetchone()
                    spent, reserved = row if row else (0, 0)
                    if spent + reserved + amount > hold.cap:
                        return Refusal(hold.key, spent, reserved)
                for hold in holds:
                    conn.execute(
                        "INSERT INTO budget_counters (key, reserved, expires_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET reserved = reserved + excluded.reserved",
                        (hold.key, amount, hold.expires_at),
                    )
                keys = "\n".join(hold.key for hold in holds)
                conn.execute(
                    "INSERT INTO reservations (id, amount, keys, expires_at) VALUES (?, ?, ?, ?)",
                    (reservation, amount, keys, expires_at),
                )
                return None

            return _transaction(conn, reserve)

        return await self._db.run(work)

    async def settle(self, reservation: str, keys: Sequence[str], actual: int) -> bool:
        return await self._db.run(
            lambda conn: _transaction(conn, partial(_settle, conn, reservation, actual))
        )

    async def usage(self, keys: Sequence[str]) -> Mapping[str, Usage]:
        wanted = list(dict.fromkeys(keys))

        def work(conn: sqlite3.Connection) -> dict[str, Usage]:
            found: dict[str, Usage] = {}
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ", ".join("?" for _ in part)
                for key, spent, reserved in conn.execute(
                    f"SELECT key, spent, reserved FROM budget_counters WHERE key IN ({marks})", part
                ):
                    found[key] = Usage(spent, reserved)
            return found

        return await self._db.run(work)

    async def expire(self, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            due = conn.execute(
                "SELECT id, amount FROM reservations WHERE expires_at <= ?", (now,)
            ).fetchall()
            return sum(_transaction(conn, partial(_settle, conn, r, a)) for r, a in due)

        return await self._db.run(work)

    async def aclose(self) -> None:
        return None  # the database belongs to whoever opened it (the spend log shares it)


def _settle(conn: sqlite3.Connection, reservation: str, actual: int) -> bool:
    row = conn.execute(
        "SELECT amount, keys FROM reservations WHERE id = ?", (reservation,)
    ).fetchone()
    if row is None:
        return False
    amount, keys = row
    for key in keys.split("\n"):
        conn.execute(
            "UPDATE budget_counters SET reserved = reserved - ?, spent = spent + ? WHERE key = ?",
            (amount, actual, key),
        )
    conn.execute("DELETE FROM reservations WHERE id = ?", (reservation,))
    return True


class SqliteSpendStore:
    """The spend log in the SQLite file, and the outbox for records bound for PostgreSQL."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        await self._db.open()

    async def write(self, records: Sequence[SpendRecord]) -> None:
        await self._insert("spend_logs", records)

    async def stash(self, records: Sequence[SpendRecord]) -> None:
        """Keep records for a store that could not take them, until `take_stashed`."""
        await self._insert("spend_outbox", records)

    async def _insert(self, table: str, records: Sequence[SpendRecord]) -> None:
        rows = [record_row(r) for r in records]

        def work(conn: sqlite3.Connection) -> None:
            _transaction(
                conn,
                lambda: conn.executemany(
                    f"INSERT OR IGNORE INTO {table} ({_NAMES}) VALUES ({_PLACEHOLDERS})", rows
                ),
            )

        await self._db.run(work)

    async def stashed(self, limit: int) -> list[SpendRecord]:
        def work(conn: sqlite3.Connection) -> list[SpendRecord]:
            rows = conn.execute(
                f"SELECT {_NAMES} FROM spend_outbox ORDER BY start_time LIMIT ?", (limit,)
            )
            return [row_record(row) for row in rows]

        return await self._db.run(work)

    async def unstash(self, records: Sequence[SpendRecord]) -> None:
        keys = [(r.request_id, r.start_time) for r in records]

        def work(conn: sqlite3.Connection) -> None:
            _transaction(
                conn,
                lambda: conn.executemany(
                    "DELETE FROM spend_outbox WHERE request_id = ? AND start_time = ?", keys
                ),
            )

        await self._db.run(work)

    async def rows(self, query: SpendQuery) -> list[SpendRecord]:
        where, args = _where(query)

        def work(conn: sqlite3.Connection) -> list[SpendRecord]:
            cursor = conn.execute(
                f"SELECT {_NAMES} FROM spend_logs{where} ORDER BY start_time DESC LIMIT ?",
                [*args, query.limit],
            )
            return [row_record(row) for row in cursor]

        return await self._db.run(work)

    async def daily(self, query: SpendQuery) -> list[DailySpend]:
        where, args = _where(query)
        sql = (
            "SELECT date(start_time, 'unixepoch'), model_group, model, caller, sum(cost), "
            "sum(prompt_tokens), sum(completion_tokens), count(*) FROM spend_logs"
            f"{where} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        )

        def work(conn: sqlite3.Connection) -> list[DailySpend]:
            return [DailySpend(*row) for row in conn.execute(sql, args)]

        return await self._db.run(work)

    async def aclose(self) -> None:
        return None


def _where(query: SpendQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if query.request_id:
        clauses.append("request_id = ?")
        args.append(query.request_id)
    if query.caller:
        clauses.append("caller = ?")
        args.append(query.caller)
    if query.model:
        clauses.append("(model_group = ? OR model = ?)")
        args += [query.model, query.model]
    if query.start is not None:
        clauses.append("start_time >= ?")
        args.append(query.start)
    if query.end is not None:
        clauses.append("start_time < ?")
        args.append(query.end)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
