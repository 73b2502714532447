"""The shared spend log: PostgreSQL at general_settings.database_url (the seed's setting).

A batch is one statement (`INSERT ... SELECT FROM unnest(...)`), one round trip however
many records it holds; `ON CONFLICT DO NOTHING` on (request_id, start_time) makes a
replayed batch harmless. The table is created when missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

from sidecar.budget.ledger import StoreUnavailable
from sidecar.budget.records import COLUMNS, record_row
from sidecar.types import DailySpend, SpendQuery, SpendRecord

TABLE = "llm_sidecar_spend_logs"
_TYPES = {
    "request_id": "text",
    "start_time": "double precision",
    "end_time": "double precision",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    "cached_tokens": "bigint",
    "cost": "double precision",
    "ttft_ms": "double precision",
    "latency_ms": "double precision",
    "attempts": "integer",
    "fallbacks": "integer",
}
_COLUMN_TYPES = [(c, _TYPES.get(c, "text")) for c in COLUMNS]
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    + ", ".join(
        f"{name} {kind}{'' if name == 'ttft_ms' else ' NOT NULL'}" for name, kind in _COLUMN_TYPES
    )
    + ", PRIMARY KEY (request_id, start_time));"
    f"CREATE INDEX IF NOT EXISTS {TABLE}_start ON {TABLE} (start_time);"
)
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_COLUMN_TYPES, 1))
    + ") ON CONFLICT DO NOTHING"
)
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


class PostgresSpendStore:
    def __init__(self, dsn: str, *, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._ready = False
        # The writer and a report may both be first to connect: one pool between them.
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        return None  # connected on first use: PostgreSQL may come up after the sidecar

    async def _connected(self) -> asyncpg.Pool:
        if self._pool is not None and self._ready:
            return self._pool
        async with self._connecting:
            return await self._connect()

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=2, timeout=self._timeout
                )
            except (*_ERRORS, ValueError) as exc:
                raise _unavailable(exc) from exc
        if not self._ready:
            try:
                await self._pool.execute(_CREATE, timeout=self._timeout)
            except _ERRORS as exc:
                raise _unavailable(exc) from exc
            self._ready = True
        return self._pool

    async def write(self, records: Sequence[SpendRecord]) -> None:
        if not records:
            return
        pool = await self._connected()
        rows = [record_row(r) for r in records]
        columns = [list(column) for column in zip(*rows, strict=True)]
        try:
            await pool.execute(_INSERT, *columns, timeout=self._timeout)
        except _ERRORS as exc:
            raise _unavailable(exc) from exc

    async def rows(self, query: SpendQuery) -> list[SpendRecord]:
        where, args = _where(query)
        args.append(query.limit)
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{where} "
            f"ORDER BY start_time DESC LIMIT ${len(args)}"
        )
        return [SpendRecord(*row) for row in await self._fetch(sql, args)]

    async def daily(self, query: SpendQuery) -> list[DailySpend]:
        where, args = _where(query)
        day = "to_char(to_timestamp(start_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        sql = (
            f"SELECT {day}, model_group, model, caller, sum(cost), sum(prompt_tokens), "
            f"sum(completion_tokens), count(*) FROM {TABLE}{where} "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        )
        return [
            DailySpend(row[0], row[1], row[2], row[3], row[4], int(row[5]), int(row[6]), row[7])
            for row in await self._fetch(sql, args)
        ]

    async def _fetch(self, sql: str, args: list[Any]) -> list[Any]:
        pool = await self._connected()
        try:
            return list(await pool.fetch(sql, *args, timeout=self._timeout))
        except _ERRORS as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def _where(query: SpendQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        args.extend(values)
        clauses.append(
            clause.format(*(f"${len(args) - len(values) + i + 1}" for i in range(len(values))))
        )

    if query.request_id:
        add("request_id = {0}", query.request_id)
    if query.caller:
        add("caller = {0}", query.caller)
    if query.model:
        add("(model_group = {0} OR model = {1})", query.model, query.model)
    if query.start is not None:
        add("start_time >= {0}", query.start)
    if query.end is not None:
        add("start_time < {0}", query.end)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _unavailable(exc: BaseException) -> StoreUnavailable:
    # The library's text may carry the DSN and its password: name the kind only.
    return StoreUnavailable(f"the PostgreSQL spend log did not answer ({type(exc).__name__})")
