"""Fixtures shared by the end-to-end tests: simulated upstreams on port 0."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sidecar.simulate import OllamaSimulator, OpenAISimulator, profile_by_name
from tests.harness import UPSTREAM_KEY


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaSimulator]:
    """A simulated Ollama that answers 20 tokens at once."""
    async with OllamaSimulator(profile=profile_by_name("instant")) as sim:
        yield sim


@pytest.fixture
async def openai_sim() -> AsyncIterator[OpenAISimulator]:
    """A simulated OpenAI-compatible server that wants UPSTREAM_KEY."""
    async with OpenAISimulator(profile=profile_by_name("instant"), api_key=UPSTREAM_KEY) as sim:
        yield sim


# -- the shared stores: real Redis and PostgreSQL, one key prefix / database per test ----------

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _service_missing(what: str) -> None:
    """Skip where a developer has no such service; fail in CI, which must run these tests."""
    reason = f"{what} is not reachable; start it to run this test"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


@asynccontextmanager
async def redis_keyspace() -> AsyncIterator[str]:
    """A key prefix of its own on the local Redis, its keys deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError):
        await client.aclose()
        _service_missing("Redis at 127.0.0.1:6379")
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match="{" + prefix + "}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with redis_keyspace() as prefix:
        yield prefix


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards."""
    name = f"test_budget_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        _service_missing("PostgreSQL at 127.0.0.1:5432")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sidecar processes a test starts keep their ledger and spend log in its own directory."""
    monkeypatch.setenv("LLM_SIDECAR_DATA_DIR", str(tmp_path / "sidecar-data"))
