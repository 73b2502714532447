"""Operations end to end, on real `llm-sidecar serve` processes: hot reload (file watch,
SIGHUP through `llm-sidecar reload`) under load, graceful drain on SIGTERM, and
`serve --workers` sharing the ports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.simulate import OllamaSimulator, OpenAISimulator
from sidecar.simulate.profile import SimProfile
from tests.bridge_harness import KEY, http_session, running_bridge, standard_config
from tests.fleet import ROOT, start_serve, stop_serve, write_config
from tests.harness import UPSTREAM_KEY, chat_request, wait_until

# A stream that lasts about a second: long enough to reload or drain under it.
SLOW = SimProfile(tokens_per_second=(40.0, 40.0), answer_tokens=40)
BRIDGE_CHAT = {"model": "fast-local", "messages": [{"role": "user", "content": "hi"}]}
BRIDGE_KEY = (("authorization", f"Bearer {KEY}"),)
# Separate channels get separate connections (gRPC shares them between equal channels).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def routes(sim_a: OllamaSimulator, sim_b: OllamaSimulator, *, chat_on: str) -> dict[str, Any]:
    """`chat` on the a- or b-model; `old` (on a) only while chat is on a."""
    model = {"a": ("ollama/a-model", sim_a), "b": ("ollama/b-model", sim_b)}[chat_on]
    entries = [
        {"model_name": "chat", "litellm_params": {"model": model[0], "api_base": model[1].base_url}}
    ]
    if chat_on == "a":
        entries.append(
            {
                "model_name": "old",
                "litellm_params": {"model": "ollama/a-model", "api_base": sim_a.base_url},
            }
        )
    return {"model_list": entries, "health": {"probe_interval": 0}}


@contextlib.asynccontextmanager
async def sims() -> AsyncIterator[tuple[OllamaSimulator, OllamaSimulator]]:
    async with OllamaSimulator(profile=SLOW) as a, OllamaSimulator(profile=SLOW) as b:
        yield a, b


async def status_of(address: str) -> pb.ListModelsResponse:
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        status: pb.ListModelsResponse = await pb_grpc.RouterStub(channel).ListModels(
            pb.ListModelsRequest(), timeout=5
        )
        return status


async def wait_for(address: str, check: Any, within: float = 10.0) -> pb.ListModelsResponse:
    async with asyncio.timeout(within):
        while True:
            status = await status_of(address)
            if check(status):
                return status
            await asyncio.sleep(0.05)


class Stream:
    """A StreamChat started now, its first chunk read; `rest()` reads it to the end."""

    def __init__(self, stub: pb_grpc.RouterStub, model: str) -> None:
        self.call = stub.StreamChat(chat_request(model), timeout=30)
        self.chunks: list[pb.ChatChunk] = []

    async def first(self) -> Stream:
        self.chunks.append(await self.call.read())
        return self

    async def rest(self) -> list[pb.ChatChunk]:
        while (chunk := await self.call.read()) is not grpc.aio.EOF:
            assert isinstance(chunk, pb.ChatChunk)
            self.chunks.append(chunk)
        return self.chunks


def answer(chunks: list[pb.ChatChunk]) -> tuple[str, int, str]:
    """(deployment's upstream model, tokens, finish reason) of a finished stream."""
    text = "".join(c.delta for c in chunks)
    finish = next((c.finish_reason for c in chunks if c.finish_reason), "")
    return chunks[0].route.upstream_model, len(text.split()), finish


def run_cli(*args: str) -> tuple[int, str, str]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, done.stdout, done.stderr


# -- hot reload ----------------------------------------------------------------------------


async def test_reload_swaps_routes_under_load_and_streams_in_flight_finish(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    pid_path = tmp_path / "sidecar.pid"
    async with sims() as (sim_a, sim_b):
        # Eight seconds a stream on the old route: well past the reload, even on a busy machine.
        sim_a.profile = SimProfile(tokens_per_second=(5.0, 5.0), answer_tokens=40)
        write_config(config, routes(sim_a, sim_b, chat_on="a"))
        serve = await start_serve(
            config, tmp_path / "data", "--reload-interval", "0", "--pid-file", str(pid_path)
        )
        try:
            before = await status_of(serve.address)
            assert before.config_hash == hashlib.sha256(config.read_bytes()).hexdigest()
            async with grpc.aio.insecure_channel(serve.address) as channel:
                stub = pb_grpc.RouterStub(channel)
                on_old_route = await Stream(stub, "chat").first()
                on_removed_alias = await Stream(stub, "old").first()
                write_config(config, routes(sim_a, sim_b, chat_on="b"))
                code, said, err = await asyncio.to_thread(
                    run_cli, "reload", "--pid-file", str(pid_path)
                )
                assert code == 0, err
                assert "reload" in said
                new_hash = hashlib.sha256(config.read_bytes()).hexdigest()
                after = await wait_for(serve.address, lambda s: s.config_hash == new_hash)
                assert after.reloads_applied == 1
                assert not on_old_route.call.done()
                assert not on_removed_alias.call.done()
                assert after.config_loaded_at > before.config_loaded_at
                assert [m.name for m in after.models] == ["chat"]
                # New calls take the new route, while the streams begun before finish on the old.
                fresh = await Stream(stub, "chat").first()
                assert answer(await fresh.rest()) == ("b-model", 40, "stop")
                assert answer(await on_old_route.rest()) == ("a-model", 40, "stop")
                assert answer(await on_removed_alias.rest()) == ("a-model", 40, "stop")
                with pytest.raises(grpc.aio.AioRpcError) as gone:
                    await stub.Chat(chat_request("old"), timeout=5)
                assert gone.value.code() is grpc.StatusCode.NOT_FOUND
        finally:
            assert await stop_serve(serve.process) == 0
        assert not pid_path.exists()


async def test_an_invalid_or_restart_only_file_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    async with sims() as (sim_a, sim_b):
        write_config(config, routes(sim_a, sim_b, chat_on="a"))
        good = hashlib.sha256(config.read_bytes()).hexdigest()
        # The file is watched (every 0.05 s here): no signal needed.
        serve = await start_serve(config, tmp_path / "data", "--reload-interval", "0.05")
        try:
            async with grpc.aio.insecure_channel(serve.address) as channel:
                stub = pb_grpc.RouterStub(channel)
                running = await Stream(stub, "chat").first()
                config.write_text("model_list: [unclosed\n", encoding="utf-8")
                rejected = await wait_for(serve.address, lambda s: s.reloads_rejected == 1)
                assert "invalid YAML" in rejected.last_reload_error
                assert rejected.config_hash == good
                broken = routes(sim_a, sim_b, chat_on="b")
                broken["model_list"][0]["litellm_params"]["timeout"] = "soon"
                write_config(config, broken)
                rejected = await wait_for(serve.address, lambda s: s.reloads_rejected == 2)
                assert "timeout" in rejected.last_reload_error
                keyed = {
                    **routes(sim_a, sim_b, chat_on="b"),
                    "general_settings": {"master_key": "sk-new-key-0123"},
                }
                write_config(config, keyed)
                rejected = await wait_for(serve.address, lambda s: s.reloads_rejected == 3)
                assert "master_key changed: that takes a restart" in rejected.last_reload_error
                assert "sk-new-key-0123" not in rejected.last_reload_error
                assert (rejected.config_hash, rejected.reloads_applied) == (good, 0)
                assert [m.name for m in rejected.models] == ["chat", "old"]
                call = await Stream(stub, "chat").first()
                assert answer(await call.rest())[0] == "a-model"
                assert answer(await running.rest()) == ("a-model", 40, "stop")
                code, said, _ = await asyncio.to_thread(
                    run_cli, "status", "--sidecar", serve.address
                )
                assert code == 0
                assert f"config {good[:12]} loaded" in said
                assert "0 reloads applied, 3 rejected" in said
                assert "last reload rejected: " in said
                code, said, _ = await asyncio.to_thread(
                    run_cli, "health", "--sidecar", serve.address
                )
                assert (code, said.strip()) == (0, f"{serve.address}: SERVING")
                code, said, _ = await asyncio.to_thread(
                    run_cli, "health", "--sidecar", serve.address, "--service", "gone"
                )
                assert (code, said.strip()) == (1, f"{serve.address}: NOT_FOUND")
        finally:
            assert await stop_serve(serve.process) == 0


# -- graceful drain --------------------------------------------------------------------------


async def test_sigterm_drains_streams_refuses_new_calls_flushes_spend_and_exits_0(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    data = tmp_path / "data"
    async with sims() as (sim_a, sim_b):
        write_config(config, routes(sim_a, sim_b, chat_on="a"))
        serve = await start_serve(config, data, "--drain-seconds", "20")
        try:
            async with grpc.aio.insecure_channel(serve.address) as channel:
                stub = pb_grpc.RouterStub(channel)
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=""), timeout=30
                )
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
                streams = [await Stream(stub, "chat").first() for _ in range(3)]
                serve.process.send_signal(signal.SIGTERM)
                # Balancers watching health hear NOT_SERVING at once...
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                # ...a new call is refused so that the caller goes elsewhere...
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Chat(chat_request("chat"), timeout=5)
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
                # ...and the streams in flight finish, whole.
                finished = await asyncio.gather(*(s.rest() for s in streams))
                assert [answer(c) for c in finished] == [("a-model", 40, "stop")] * 3
                watch.cancel()
            async with asyncio.timeout(20):
                assert await serve.process.wait() == 0
        finally:
            await stop_serve(serve.process, signal.SIGKILL)
    # Every call's spend record reached the log before the exit.
    with contextlib.closing(sqlite3.connect(data / "spend.sqlite3")) as db:
        (rows,) = db.execute("SELECT count(*) FROM spend_logs").fetchone()
    assert rows == 3


async def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    async with sims() as (sim_a, sim_b):
        sim_a.profile = SimProfile(tokens_per_second=(5.0, 5.0), answer_tokens=500)
        write_config(config, routes(sim_a, sim_b, chat_on="a"))
        serve = await start_serve(config, tmp_path / "data", "--drain-seconds", "600")
        try:
            async with grpc.aio.insecure_channel(serve.address) as channel:
                stream = await Stream(pb_grpc.RouterStub(channel), "chat").first()
                serve.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                serve.process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    assert await serve.process.wait() == 0
                with pytest.raises(grpc.aio.AioRpcError):
                    await stream.rest()
            assert await wait_until(lambda: sim_a.stats.disconnects >= 1, within=5.0)
        finally:
            await stop_serve(serve.process, signal.SIGKILL)


# -- workers -----------------------------------------------------------------------------------


async def pids_seen(address: str, want: int, but: int = 0, within: float = 30.0) -> set[int]:
    """Worker pids (other than `but`) answering on fresh connections, until `want` of them."""
    seen: set[int] = set()
    async with asyncio.timeout(within):
        while len(seen - {but}) < want:
            with contextlib.suppress(grpc.aio.AioRpcError):
                seen.add((await status_of(address)).pid)
            await asyncio.sleep(0.01)
    return seen - {but}


async def test_two_workers_share_the_port_and_a_killed_one_is_replaced(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    async with sims() as (sim_a, sim_b):
        write_config(config, routes(sim_a, sim_b, chat_on="a"))
        # No file watch: only the forwarded SIGHUP below can make the workers reload.
        serve = await start_serve(
            config, tmp_path / "data", "--workers", "2", "--reload-interval", "0"
        )
        try:
            assert "with 2 workers" in serve.banner
            workers = await pids_seen(serve.address, 2)
            assert len(workers) == 2
            status = await status_of(serve.address)
            assert status.workers == 2
            # Streams on several connections; kill the worker that one of them is not on.
            channels = [
                grpc.aio.insecure_channel(serve.address, options=OWN_CONNECTION) for _ in range(6)
            ]
            try:
                on: dict[int, list[Stream]] = {}
                for channel in channels:
                    stub = pb_grpc.RouterStub(channel)
                    pid = (await stub.ListModels(pb.ListModelsRequest(), timeout=5)).pid
                    on.setdefault(pid, []).append(await Stream(stub, "chat").first())
                survivor = max(on, key=lambda pid: len(on[pid]))
                (victim,) = workers - {survivor}
                os.kill(victim, signal.SIGKILL)
                finished = await asyncio.gather(*(s.rest() for s in on[survivor]))
                assert all(answer(c) == ("a-model", 40, "stop") for c in finished)
            finally:
                await asyncio.gather(*(c.close() for c in channels))
            # The survivor and a new worker in the victim's place.
            assert survivor in await pids_seen(serve.address, 2, but=victim)
            # SIGHUP to the supervisor reaches every worker: each reloads.
            write_config(config, routes(sim_a, sim_b, chat_on="b"))
            new_hash = hashlib.sha256(config.read_bytes()).hexdigest()
            serve.process.send_signal(signal.SIGHUP)
            reloaded: set[int] = set()
            async with asyncio.timeout(30):
                while len(reloaded) < 2:
                    status = await status_of(serve.address)
                    if status.config_hash == new_hash:
                        reloaded.add(status.pid)
                    await asyncio.sleep(0.01)
            assert victim not in reloaded
        finally:
            assert await stop_serve(serve.process) == 0


async def test_a_call_reaching_a_draining_sidecar_is_refused_on_both_doors(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    # What a call that slips in after SIGTERM meets (the drain marks the engine first, then
    # closes the listeners): UNAVAILABLE, or 503 with a retry-after, so it goes elsewhere.
    config = standard_config(ollama, openai_sim)
    async with running_bridge(config, "in-process") as bridge, http_session() as http:
        bridge.sidecar.engine.refuse_new_calls()
        async with http.post(f"{bridge.base_url}/chat/completions", json=BRIDGE_CHAT) as r:
            assert r.status == 503
            assert r.headers["retry-after"] == "1"
            assert "shutting down" in (await r.json())["error"]["message"]
        address = f"127.0.0.1:{bridge.sidecar.grpc_port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.RouterStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Chat(chat_request("fast-local"), timeout=5, metadata=BRIDGE_KEY)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            status = await stub.ListModels(pb.ListModelsRequest(), timeout=5, metadata=BRIDGE_KEY)
            assert status.draining


IN, OUT = 1e-6, 1e-5  # USD per token
# A call costs 2 prompt + 20 completion tokens = 202 micro-dollars: the cap holds 30.
CAP = 30 * 202e-6


async def test_two_workers_share_one_sqlite_ledger_exactly(tmp_path: Path) -> None:
    profile = SimProfile(ttft=(0.05, 0.05), answer_tokens=20)
    async with OpenAISimulator(profile=profile, api_key=UPSTREAM_KEY) as cloud:
        entry = {
            "model_name": "cloud",
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": cloud.base_url,
                "api_key": UPSTREAM_KEY,
            },
            "model_info": {
                "locality": "cloud",
                "input_cost_per_token": IN,
                "output_cost_per_token": OUT,
            },
        }
        config = write_config(
            tmp_path / "config.yaml",
            {
                "model_list": [entry],
                "general_settings": {"max_budget": CAP},
                "budget": {"ledger": "sqlite", "refresh_interval": 0.2},
                "health": {"probe_interval": 0},
            },
        )
        serve = await start_serve(config, tmp_path / "data", "--workers", "2")
        channels: dict[int, list[grpc.aio.Channel]] = {}
        try:
            # Connections until each worker has at least three.
            async with asyncio.timeout(30):
                while len(channels) < 2 or min(map(len, channels.values())) < 3:
                    channel = grpc.aio.insecure_channel(serve.address, options=OWN_CONNECTION)
                    stub = pb_grpc.RouterStub(channel)
                    pid = (await stub.ListModels(pb.ListModelsRequest(), timeout=5)).pid
                    channels.setdefault(pid, []).append(channel)
            stubs = [pb_grpc.RouterStub(c) for cs in channels.values() for c in cs]
            outcomes = await asyncio.gather(*(_chat(stubs[i % len(stubs)]) for i in range(80)))
            async with asyncio.timeout(10):
                while True:
                    spend = await stubs[0].GetSpend(pb.SpendRequest(budgets_only=True), timeout=5)
                    if spend.budgets[0].reserved == 0:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await asyncio.gather(*(c.close() for cs in channels.values() for c in cs))
            assert await stop_serve(serve.process) == 0
    (cap,) = spend.budgets
    billed = cloud.stats.prompt_tokens * IN + cloud.stats.completion_tokens * OUT
    assert cap.spent <= CAP + 1e-12
    assert cap.spent == pytest.approx(billed, abs=1e-9)
    assert set(outcomes) == {"ok", "budget"}
    assert 25 <= outcomes.count("ok") == cloud.stats.completed <= 30


async def _chat(stub: pb_grpc.RouterStub) -> str:
    request = chat_request("cloud", params=pb.GenerationParams(max_tokens=20))
    try:
        await stub.Chat(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        # Anything but a refused budget shows in the set of outcomes.
        return "budget" if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED else exc.code().name
    return "ok"
