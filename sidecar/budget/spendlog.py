"""The spend log writer: records queued by calls, written in batches by one background task.

A call only puts its record on a bounded queue, after its answer has been relayed; when
the queue is full the call waits for room rather than dropping the record. The writer
takes up to `batch` records at a time (waiting at most `interval` to fill a batch) and
writes them to the shared store (PostgreSQL) when there is one, else to the SQLite file.
A batch the shared store refuses goes to the SQLite outbox, and the outbox is replayed
into the shared store once it answers again. `aclose` stops taking records, writes
everything queued, and tries one last replay, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from sidecar.budget.ledger import StoreUnavailable
from sidecar.budget.stores.sqlite import SqliteSpendStore
from sidecar.types import DailySpend, SpendQuery, SpendRecord

log = logging.getLogger("sidecar.budget.spendlog")

# Seconds between replays of the outbox while the shared store stays down.
_RETRY = 2.0


class SpendStore(Protocol):
    async def start(self) -> None: ...

    async def write(self, records: Sequence[SpendRecord]) -> None: ...

    async def rows(self, query: SpendQuery) -> list[SpendRecord]: ...

    async def daily(self, query: SpendQuery) -> list[DailySpend]: ...

    async def aclose(self) -> None: ...


class SpendLog:
    def __init__(
        self,
        local: SqliteSpendStore,
        shared: SpendStore | None,
        *,
        queue_size: int = 10_000,
        batch: int = 500,
        interval: float = 0.2,
    ) -> None:
        self._local = local
        self._shared = shared
        self._queue: asyncio.Queue[SpendRecord] = asyncio.Queue(queue_size)
        self._batch = batch
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stashed = False  # the outbox may hold records to replay
        self._current: list[SpendRecord] = []  # the batch being written
        self.written = 0  # records stored, in the shared store or locally

    @property
    def reader(self) -> SpendStore:
        """Where reports read the log: the shared store when there is one."""
        return self._shared if self._shared is not None else self._local

    async def start(self) -> None:
        await self._local.start()
        if self._shared is not None:
            await self._shared.start()
            self._stashed = True  # a previous run may have left records in the outbox
        self._task = asyncio.create_task(self._run(), name="spend log writer")

    async def put(self, record: SpendRecord) -> None:
        if self._closing:
            # Late records (calls cut off while the engine closes) are written at once.
            await self._write([record])
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            log.warning(
                "spend log queue full (%d records): waiting for the writer", self._queue.maxsize
            )
            await self._queue.put(record)

    async def _run(self) -> None:
        queue = self._queue
        while True:
            timeout = _RETRY if self._stashed else None
            try:
                first = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                await self._replay()
                continue
            batch = self._current = [first]
            await self._fill(batch)
            await self._write(batch)
            self._current = []
            for _ in batch:
                queue.task_done()

    async def _fill(self, batch: list[SpendRecord]) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        end = loop.time() + self._interval
        while len(batch) < self._batch:
            if queue.empty():
                left = end - loop.time()
                if left <= 0:
                    return
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    return
                continue
            batch.append(queue.get_nowait())

    async def _write(self, batch: list[SpendRecord]) -> None:
        shared = self._shared
        if shared is not None:
            try:
                await shared.write(batch)
                self.written += len(batch)
                if self._stashed:
                    await self._replay()
                return
            except StoreUnavailable as exc:
                log.warning("%s: %d spend records kept locally for later", exc, len(batch))
            self._stashed = True
            await self._stash(batch)
            return
        try:
            await self._local.write(batch)
            self.written += len(batch)
        except StoreUnavailable as exc:
            log.error("%s: %d spend records could not be written", exc, len(batch))

    async def _stash(self, batch: list[SpendRecord]) -> None:
        try:
            await self._local.stash(batch)
            self.written += len(batch)
        except StoreUnavailable as exc:
            log.error("%s: %d spend records could not be kept", exc, len(batch))

    async def _replay(self) -> None:
        """Move the outbox into the shared store, batch by batch, while it answers."""
        shared = self._shared
        if shared is None:
            return
        try:
            while True:
                records = await self._local.stashed(self._batch)
                if not records:
                    self._stashed = False
                    return
                await shared.write(records)
                await self._local.unstash(records)
                log.info("replayed %d spend records into the shared spend log", len(records))
        except StoreUnavailable:
            return

    async def aclose(self, timeout: float = 10.0) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A batch the writer was cut off in may be half written: rows are keyed, so writing
        # it again stores each record once.
        leftover, self._current = self._current, []
        while not self._queue.empty():
            leftover.append(self._queue.get_nowait())
        if leftover:
            await self._write(leftover)
        if self._stashed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replay(), timeout)
        if self._shared is not None:
            await self._shared.aclose()
