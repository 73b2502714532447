"""The spend log on real PostgreSQL: batches off the request path, nothing lost while the
database is down (kept in SQLite, replayed), nothing lost when a sidecar is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import pytest

from sidecar.budget.stores.postgres import TABLE
from sidecar.config import SidecarConfig
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.simulate import OllamaSimulator, SimProfile
from sidecar.types import SpendQuery
from tests.fleet import start_serve, stop_serve, write_config
from tests.harness import chat_request, make_config, running_sidecar, wait_until

PG_PORT = 5432


async def _records(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", TABLE)
        if exists is None:
            return []
        return list(await conn.fetch(f"SELECT request_id, status, locality FROM {TABLE}"))
    finally:
        await conn.close()


async def _until(count: int, dsn: str, within: float = 10.0) -> list[asyncpg.Record]:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        rows = await _records(dsn)
        if len(rows) >= count or loop.time() >= end:
            return rows
        await asyncio.sleep(0.05)


class Gate:
    """A TCP proxy to PostgreSQL that can be shut: shut, it hangs up on every connection."""

    def __init__(self) -> None:
        self.open = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", PG_PORT)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
            self._pipes.discard(pipe)
        writer.close()
        up_writer.close()

    def shut(self) -> None:
        self.open = False
        for pipe in list(self._pipes):
            pipe.cancel()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gate]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.shut()
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _local_config(ollama: OllamaSimulator, dsn: str) -> SidecarConfig:
    return make_config(
        [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
        general_settings={"database_url": dsn},
        budget={"spend_log_interval": 0.05},
    )


async def test_records_reach_postgres_in_batches(
    ollama: OllamaSimulator, postgres_dsn: str
) -> None:
    async with running_sidecar(_local_config(ollama, postgres_dsn)) as sidecar:
        await asyncio.gather(
            *(sidecar.stub.Chat(chat_request("fast-local"), timeout=10) for _ in range(30))
        )
        rows = await _until(30, postgres_dsn)
        assert len(rows) == 30
        assert {r["status"] for r in rows} == {"ok"}
        # Reports read the shared log.
        report = await sidecar.engine.spend(SpendQuery(limit=100))
        assert len(report.rows) == 30


async def test_postgres_down_loses_no_records(
    ollama: OllamaSimulator, postgres_dsn: str, tmp_path: Path
) -> None:
    async with Gate().running() as gate:
        dsn = postgres_dsn.replace(f":{PG_PORT}/", f":{gate.port}/")
        config = _local_config(ollama, dsn)
        async with running_sidecar(config, data_dir=str(tmp_path)) as sidecar:
            for _ in range(10):
                await sidecar.stub.Chat(chat_request("fast-local"), timeout=10)
            engine = sidecar.engine
            await asyncio.sleep(0.3)  # the writer tried, and kept them locally
            assert await _records(postgres_dsn) == []
            gate.open = True
            rows = await _until(10, postgres_dsn)
            assert len(rows) == 10
            # Down again in the middle of traffic; then back.
            gate.shut()
            for _ in range(5):
                await sidecar.stub.Chat(chat_request("fast-local"), timeout=10)
            gate.open = True
            rows = await _until(15, postgres_dsn)
            assert len(rows) == 15
            assert engine.budgets.spend_log.written >= 15
    assert len({r["request_id"] for r in rows}) == 15


@pytest.mark.slow
async def test_sigterm_under_load_loses_no_records(postgres_dsn: str, tmp_path: Path) -> None:
    slow = SimProfile(ttft=(0.05, 0.05), tokens_per_second=(200.0, 200.0), answer_tokens=40)
    async with OllamaSimulator(profile=slow) as ollama:
        config = write_config(
            tmp_path / "serve.yaml",
            {
                "model_list": [
                    {
                        "model_name": "fast-local",
                        "litellm_params": {
                            "model": "ollama/llama3.2:8b",
                            "api_base": ollama.base_url,
                        },
                    }
                ],
                "general_settings": {"database_url": postgres_dsn},
                # Written only when the process stops: the flush on shutdown is what is tested.
                "budget": {"spend_log_interval": 60, "spend_log_batch": 100_000},
                "health": {"probe_interval": 0},
            },
        )
        sidecar = await start_serve(config, tmp_path / "data")
        try:
            async with grpc.aio.insecure_channel(sidecar.address) as channel:
                stub = pb_grpc.RouterStub(channel)

                async def call() -> bool:
                    request = pb.ChatRequest(
                        model="fast-local", messages=[pb.Message(role="user", content="hi")]
                    )
                    try:
                        await stub.Chat(request, timeout=20)
                    except grpc.aio.AioRpcError:
                        return False
                    return True

                calls = [asyncio.create_task(call()) for _ in range(80)]
                assert await wait_until(lambda: ollama.stats.requests >= 40, 20)
                sidecar.process.send_signal(signal.SIGTERM)
                outcomes = await asyncio.gather(*calls)
        finally:
            code = await stop_serve(sidecar.process)
    assert code == 0
    rows = await _records(postgres_dsn)
    # Every call that reached the upstream has its record; none is lost or doubled.
    assert len(rows) == ollama.stats.requests >= sum(outcomes) > 0
    assert len({r["request_id"] for r in rows}) == len(rows)
