"""Budgets end to end over real sockets: gRPC and HTTP callers, simulated upstreams, the real
ledger (SQLite, Redis) and the real spend log."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar.engine import Engine
from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import OllamaSimulator, OpenAISimulator, SimProfile
from sidecar.types import SpendQuery
from tests.bridge_harness import KEY, http_session, running_bridge
from tests.harness import UPSTREAM_KEY, chat_request, make_config, running_sidecar

# One micro-dollar per prompt token, ten per completion token: every cost is exact.
IN, OUT = 1e-6, 1e-5
ANSWER = 20  # tokens the simulators answer


def budget_config(
    ollama: OllamaSimulator | None,
    cloud: OpenAISimulator,
    *,
    fallback: bool = True,
    **sections: Any,
) -> Any:
    entries: list[tuple[str, str, Mapping[str, Any]]] = [
        (
            "cloud",
            "openai/gpt-4o-mini",
            {
                "api_base": cloud.base_url,
                "api_key": UPSTREAM_KEY,
                "model_info": {
                    "locality": "cloud",
                    "input_cost_per_token": IN,
                    "output_cost_per_token": OUT,
                },
            },
        )
    ]
    if ollama is not None:
        entries.append(("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}))
        if fallback:
            sections.setdefault("litellm_settings", {"fallbacks": [{"cloud": ["fast-local"]}]})
    sections.setdefault("timeouts", {"first_token": 5, "idle": 5, "total": 20})
    return make_config(entries, **sections)


def billed(sim: OpenAISimulator) -> float:
    """What the simulator's own counts say its answers cost."""
    return sim.stats.prompt_tokens * IN + sim.stats.completion_tokens * OUT


async def spent(engine: Engine, budget: str = "global") -> float:
    """The cap's spend once no call holds a reservation on it (settlements run after the
    answer, in the background)."""

    async def settled() -> None:
        status = next(b for b in await engine.budget_status() if b.budget == budget)
        assert status.reserved == 0

    await eventually(settled)
    return next(b.spent for b in await engine.budget_status() if b.budget == budget)


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Await `check()` until it stops raising AssertionError, for at most `within` s."""
    end = time.monotonic() + within
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                await result
            return
        except AssertionError:
            if time.monotonic() >= end:
                raise
            await asyncio.sleep(0.02)


def cloud_chat(text: str = "Say hello", **fields: Any) -> pb.ChatRequest:
    return chat_request("cloud", text, params=pb.GenerationParams(max_tokens=ANSWER), **fields)


async def test_a_cloud_call_is_charged_what_the_provider_reported_and_local_calls_nothing(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    config = budget_config(ollama, openai_sim, general_settings={"max_budget": 1})
    async with running_sidecar(config) as sidecar:
        answer = await sidecar.stub.Chat(cloud_chat(), timeout=10)
        assert answer.route.locality == pb.LOCALITY_CLOUD
        assert await spent(sidecar.engine) == pytest.approx(billed(openai_sim))
        assert billed(openai_sim) > 0
        before = await sidecar.engine.budget_status()
        local = await sidecar.stub.Chat(chat_request("fast-local"), timeout=10)
        assert local.route.locality == pb.LOCALITY_LOCAL
        assert await sidecar.engine.budget_status() == before
        assert all(b.reserved == 0 for b in before)

        async def both_logged() -> None:
            report = await sidecar.engine.spend(SpendQuery())
            by_locality = {r.locality: r for r in report.rows}
            assert set(by_locality) == {"cloud", "local"}
            cloud = by_locality["cloud"]
            assert cloud.cost == pytest.approx(billed(openai_sim))
            assert cloud.completion_tokens == ANSWER
            assert (cloud.status, cloud.attempts, cloud.model_group) == ("ok", 1, "cloud")
            assert by_locality["local"].cost == 0

        await eventually(both_logged)
        over_grpc = await sidecar.stub.GetSpend(pb.SpendRequest(model="cloud"), timeout=5)
        (record,) = over_grpc.records
        assert record.locality == pb.LOCALITY_CLOUD
        assert record.cost == pytest.approx(billed(openai_sim))
        assert [b.budget for b in over_grpc.budgets] == ["global"]
        assert sum(d.spend for d in over_grpc.daily) == pytest.approx(billed(openai_sim))


async def test_over_budget_the_cloud_is_left_out_and_local_answers(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    # $0.0001 cannot hold the worst case of one call (20 answer tokens at 10 micro-dollars).
    config = budget_config(ollama, openai_sim, general_settings={"max_budget": 0.0001})
    async with running_sidecar(config) as sidecar:
        plan = await sidecar.stub.Route(cloud_chat(), timeout=5)
        assert [c.deployment for c in plan.candidates] == ["fast-local/0"]
        assert any("budget: left out cloud/0" in note for note in plan.notes)
        answer = await sidecar.stub.Chat(cloud_chat(), timeout=10)
        assert answer.route.deployment == "fast-local/0"
    assert openai_sim.stats.requests == 0


async def test_nothing_left_is_resource_exhausted_with_error_info(
    openai_sim: OpenAISimulator,
) -> None:
    config = budget_config(
        None, openai_sim, general_settings={"max_budget": 0.0001, "budget_duration": "1mo"}
    )
    async with running_sidecar(config) as sidecar:
        call = sidecar.stub.Chat(cloud_chat(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = await rpc_status.aio.from_call(call)
        assert status is not None
        infos, retries = [], []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                infos.append(info)
            retries.append(detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR))
        assert [i.reason for i in infos] == ["BUDGET_EXHAUSTED"]
        meta = infos[0].metadata
        assert meta["budget"] == "global"
        assert float(meta["cap"]) == pytest.approx(0.0001)
        assert float(meta["resets_at"]) > time.time()
        assert not any(retries)  # a monthly cap: no retry hint
    assert openai_sim.stats.requests == 0


async def test_http_callers_get_429_budget_exceeded(openai_sim: OpenAISimulator) -> None:
    config = budget_config(
        None,
        openai_sim,
        general_settings={"master_key": KEY, "max_budget": 0.0001, "budget_duration": "30d"},
    )
    async with running_bridge(config, "in-process") as bridge:
        client = bridge.client()
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model="cloud", messages=[{"role": "user", "content": "hi"}], max_tokens=ANSWER
            )
        await client.close()
        error = caught.value
        assert isinstance(error.body, dict)
        assert error.body["type"] == "budget_exceeded"
        assert "global" in error.body["message"]
        assert error.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in error.response.headers


async def test_spend_survives_a_restart_and_an_exhausted_budget_stays_exhausted(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator, tmp_path: Path
) -> None:
    # Room for one call's worst case (about 230 micro-dollars), not for two.
    config = budget_config(
        ollama, openai_sim, fallback=False, general_settings={"max_budget": 0.0003}
    )
    data = str(tmp_path / "data")
    async with running_sidecar(config, data_dir=data) as sidecar:
        await sidecar.stub.Chat(cloud_chat(), timeout=10)
        first = await spent(sidecar.engine)
    assert first == pytest.approx(billed(openai_sim))
    async with running_sidecar(config, data_dir=data) as sidecar:
        assert await spent(sidecar.engine) == first
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sidecar.stub.Chat(cloud_chat(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        report = await sidecar.engine.spend(SpendQuery())
        assert [r.locality for r in report.rows if r.status == "ok"] == ["cloud"]
    assert openai_sim.stats.requests == 1


async def test_a_rollover_opens_a_fresh_window_without_erasing_it(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    now = [1_800_000_000.0]  # a moment well inside an hour-long window
    now[0] -= now[0] % 3600 - 60
    config = budget_config(
        ollama,
        openai_sim,
        fallback=False,
        general_settings={"max_budget": 0.0003, "budget_duration": "1h"},
    )
    async with running_sidecar(config, wall=lambda: now[0]) as sidecar:
        await sidecar.stub.Chat(cloud_chat(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await sidecar.stub.Chat(cloud_chat(), timeout=10)
        now[0] += 3600  # the next window
        answer = await sidecar.stub.Chat(cloud_chat(), timeout=10)
        assert answer.route.locality == pb.LOCALITY_CLOUD
        assert await spent(sidecar.engine) == pytest.approx(billed(openai_sim) / 2)
        (status,) = await sidecar.engine.budget_status()
        assert status.window_start == now[0] - now[0] % 3600
    assert openai_sim.stats.requests == 2


async def test_a_stream_cancelled_midway_is_charged(ollama: OllamaSimulator) -> None:
    slow = SimProfile(tokens_per_second=(40.0, 40.0), answer_tokens=400)
    async with OpenAISimulator(profile=slow, api_key=UPSTREAM_KEY) as cloud:
        config = budget_config(ollama, cloud, general_settings={"max_budget": 1})
        async with running_sidecar(config) as sidecar:
            request = chat_request("cloud", "Tell me a long story")
            call = sidecar.stub.StreamChat(request, timeout=10)
            relayed = 0
            async for chunk in call:
                relayed += len(chunk.delta.split())
                if relayed >= 3:
                    break
            call.cancel()

            async def charged() -> None:
                (status,) = await sidecar.engine.budget_status()
                assert status.reserved == 0
                # At least the prompt and the tokens relayed; never $0.
                assert status.spent >= relayed * OUT
                report = await sidecar.engine.spend(SpendQuery())
                assert len(report.rows) == 1
                record = report.rows[0]
                assert record.status == "cancelled"
                assert record.cost == pytest.approx(status.spent)

            await eventually(charged)
        assert cloud.stats.completion_tokens == 0  # the upstream never finished the answer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ledger_down_fails_cloud_closed_while_local_keeps_flowing(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    config = budget_config(
        ollama,
        openai_sim,
        fallback=False,
        general_settings={"max_budget": 1},
        budget={"ledger": "redis", "redis_url": dead},
    )
    async with running_sidecar(config) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sidecar.stub.Chat(cloud_chat(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "ledger" in (caught.value.details() or "")
        assert dead not in (caught.value.details() or "")
        for _ in range(3):
            local = await sidecar.stub.Chat(chat_request("fast-local"), timeout=10)
            assert local.route.locality == pb.LOCALITY_LOCAL
    assert openai_sim.stats.requests == 0


async def test_caller_caps_are_per_caller(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator, redis_prefix: str
) -> None:
    config = budget_config(
        ollama,
        openai_sim,
        fallback=False,
        budget={
            "ledger": "redis",
            "redis_url": "redis://127.0.0.1:6379/0",
            "redis_prefix": redis_prefix,
            "default_caller": {"max_budget": 0.0003, "budget_duration": "1d"},
        },
    )
    async with running_sidecar(config) as sidecar:
        await sidecar.stub.Chat(cloud_chat(metadata={"caller": "alice"}), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sidecar.stub.Chat(cloud_chat(metadata={"caller": "alice"}), timeout=10)
        assert "caller:alice" in (caught.value.details() or "")
        await sidecar.stub.Chat(cloud_chat(metadata={"caller": "bob"}), timeout=10)
        alice = await spent(sidecar.engine, "caller:alice")
        assert alice > 0
        assert await spent(sidecar.engine, "caller:bob") == pytest.approx(alice)
    assert openai_sim.stats.requests == 2


async def test_spend_reports_in_litellm_shapes(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    config = budget_config(
        ollama,
        openai_sim,
        general_settings={"master_key": KEY, "max_budget": 1, "budget_duration": "1mo"},
    )
    async with running_bridge(config, "in-process") as bridge, http_session() as http:
        for model in ("cloud", "fast-local"):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": ANSWER,
            }
            async with http.post(f"{bridge.base_url}/chat/completions", json=body) as response:
                assert response.status == 200
                request_id = response.headers["x-request-id"]
        engine = bridge.sidecar.engine

        async def logged() -> None:
            assert len((await engine.spend(SpendQuery())).rows) == 2

        await eventually(logged)
        rows = await _get(http, f"{bridge.root}/spend/logs")
        assert {r["model_group"] for r in rows} == {"cloud", "fast-local"}
        cloud = next(r for r in rows if r["model_group"] == "cloud")
        assert cloud["spend"] == pytest.approx(billed(openai_sim))
        assert cloud["user"].startswith("key-")  # the caller, known by its hashed key
        assert KEY not in str(rows)
        assert {"request_id", "startTime", "endTime", "prompt_tokens", "total_tokens"} <= set(cloud)
        (one,) = await _get(http, f"{bridge.root}/spend/logs?request_id={request_id}")
        assert one["model_group"] == "fast-local"
        today = time.strftime("%Y-%m-%d", time.gmtime())
        daily = await _get(http, f"{bridge.root}/global/spend/logs")
        assert daily == [{"date": today, "spend": pytest.approx(billed(openai_sim))}]
        assert await _get(http, f"{bridge.root}/global/spend/logs?model=fast-local") == [
            {"date": today, "spend": 0.0}
        ]
        summary = await _get(http, f"{bridge.root}/spend/logs?start_date={today}&end_date={today}")
        assert summary[0]["startTime"] == today
        assert summary[0]["models"]["gpt-4o-mini"] == pytest.approx(billed(openai_sim))
        report = await _get(
            http, f"{bridge.root}/global/spend/report?start_date={today}&end_date={today}"
        )
        assert report[0]["group_by_day"].startswith(today)
        assert report[0]["teams"][0]["total_spend"] == pytest.approx(billed(openai_sim))
        health = await _get(http, f"{bridge.root}/health")
        (cap,) = health["budgets"]
        assert cap["budget"] == "global"
        assert cap["remaining"] == pytest.approx(1 - billed(openai_sim))
        async with http.get(f"{bridge.root}/global/spend/report") as response:
            assert response.status == 400


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_standalone_bridge_reports_spend_over_grpc(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    config = budget_config(
        ollama,
        openai_sim,
        general_settings={"master_key": KEY, "max_budget": 1, "budget_duration": "1d"},
    )
    async with running_bridge(config, "remote") as bridge, http_session() as http:
        body = {
            "model": "cloud",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": ANSWER,
        }
        async with http.post(f"{bridge.base_url}/chat/completions", json=body) as response:
            assert response.status == 200
        engine = bridge.sidecar.engine
        assert await spent(engine) == pytest.approx(billed(openai_sim))

        async def logged() -> None:
            assert len((await engine.spend(SpendQuery())).rows) == 1

        await eventually(logged)
        (row,) = await _get(http, f"{bridge.root}/spend/logs")
        assert row["spend"] == pytest.approx(billed(openai_sim))
        health = await _get(http, f"{bridge.root}/health")
        assert [b["budget"] for b in health["budgets"]] == ["global"]
        assert health["budgets"][0]["spend"] == pytest.approx(billed(openai_sim))
