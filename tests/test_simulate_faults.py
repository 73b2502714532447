"""Injected faults reach the official clients as the errors they would see from the real
servers; disconnects are counted; the control endpoint and the CLI drive a running simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from sidecar.cli.simulate import configure_parser, run
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator, SimProfile, profile_by_name
from sidecar.simulate.faults import fault_from_json
from sidecar.simulate.server import Simulator

MODEL = "llama3.1:8b"
GPT = "gpt-4o"
KEY = "sk-sim"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Capital of Peru?"}]
# Slow enough that a client can leave in the middle; tests never wait for the whole answer.
SLOW = SimProfile(tokens_per_second=(20.0, 20.0), answer_tokens=200)
POLL = 0.01  # seconds between looks at a counter
POLL_LIMIT = 1.0  # seconds before giving up on one


async def eventually(condition: Callable[[], bool], limit: float = POLL_LIMIT) -> bool:
    """Poll `condition` until it holds or `limit` seconds pass; return its last value."""
    for _ in range(int(limit / POLL)):
        if condition():
            return True
        await asyncio.sleep(POLL)
    return condition()


@asynccontextmanager
async def open_ollama(url: str, **kwargs: Any) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=url, **kwargs)
    try:
        yield client
    finally:
        # ollama's close() carries no annotations, and its AsyncClient has no __aenter__.
        await cast(Any, client).close()


def open_openai(sim: OpenAISimulator, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0, **kwargs)


@pytest.fixture
async def openai_sim() -> AsyncIterator[OpenAISimulator]:
    async with OpenAISimulator(SimProfile(answer_tokens=5), api_key=KEY) as sim:
        yield sim


@pytest.fixture
async def ollama_sim() -> AsyncIterator[OllamaSimulator]:
    async with OllamaSimulator(SimProfile(answer_tokens=5)) as sim:
        yield sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ----- the Fault value ------------------------------------------------------------------------


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match=r"fault\.kind"):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        Fault("http_500", probability=1.5)
    with pytest.raises(ValueError, match="count"):
        Fault("http_500", count=0)
    with pytest.raises(ValueError, match="refuse"):
        Fault("refuse", count=1)
    with pytest.raises(ValueError, match="unknown field"):
        fault_from_json({"kind": "drop", "after": 3})
    assert fault_from_json({"kind": "drop", "after_tokens": 3}) == Fault("drop", after_tokens=3)
    assert fault_from_json(None) is None


# ----- OpenAI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("http_500", openai.InternalServerError),
        ("http_503", openai.InternalServerError),
        ("http_429", openai.RateLimitError),
    ],
)
async def test_openai_http_faults(
    openai_sim: OpenAISimulator, kind: Any, error: type[openai.APIStatusError]
) -> None:
    openai_sim.fault = Fault(kind, retry_after=2)
    async with open_openai(openai_sim) as client:
        with pytest.raises(error) as caught:
            await client.chat.completions.create(model=GPT, messages=USER)
    status = int(kind.removeprefix("http_"))
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    if status == 429:
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.response.headers["retry-after"] == "2"
    assert openai_sim.stats.requests == 1


async def test_openai_wrong_key(openai_sim: OpenAISimulator) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_sim.base_url, api_key="sk-wrong", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=GPT, messages=USER)
        assert caught.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


async def test_openai_refuse_then_listen_again_on_the_same_port(
    openai_sim: OpenAISimulator,
) -> None:
    port = openai_sim.port
    async with open_openai(openai_sim) as client:
        await client.chat.completions.create(model=GPT, messages=USER)  # a pooled connection
        with pytest.raises(ValueError, match="set_fault"):
            openai_sim.fault = Fault("refuse")
        await openai_sim.set_fault(Fault("refuse"))
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model=GPT, messages=USER)
        await openai_sim.set_fault(None)
        reply = await client.chat.completions.create(model=GPT, messages=USER)
    assert openai_sim.port == port
    assert reply.choices[0].finish_reason == "stop"


async def test_openai_hang_times_out_and_is_seen_leaving(openai_sim: OpenAISimulator) -> None:
    openai_sim.fault = Fault("hang")
    async with open_openai(openai_sim, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=GPT, messages=USER)
    assert await eventually(lambda: openai_sim.stats.disconnects == 1)
    assert openai_sim.stats.in_flight == 0
    assert openai_sim.stats.last_disconnect_at is not None


async def test_openai_drop_mid_stream(openai_sim: OpenAISimulator) -> None:
    openai_sim.fault = Fault("drop", after_tokens=2)
    received: list[str] = []
    async with open_openai(openai_sim) as client:
        stream = await client.chat.completions.create(model=GPT, messages=USER, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "tok0 tok1 "
    assert openai_sim.stats.disconnects == 0  # the simulator left, not the client


async def test_openai_error_line_mid_stream(openai_sim: OpenAISimulator) -> None:
    openai_sim.fault = Fault("error_line", after_tokens=1)
    async with open_openai(openai_sim) as client:
        stream = await client.chat.completions.create(model=GPT, messages=USER, stream=True)
        with pytest.raises(openai.APIError, match="simulated failure"):
            async for _ in stream:
                pass


async def test_openai_malformed_mid_stream(openai_sim: OpenAISimulator) -> None:
    openai_sim.fault = Fault("malformed", after_tokens=1)
    async with open_openai(openai_sim) as client:
        stream = await client.chat.completions.create(model=GPT, messages=USER, stream=True)
        with pytest.raises(json.JSONDecodeError):
            async for _ in stream:
                pass


@pytest.mark.parametrize("kind", ["drop", "malformed", "error_line"])
async def test_openai_stream_faults_without_streaming(
    openai_sim: OpenAISimulator, kind: Any
) -> None:
    openai_sim.fault = Fault(kind)
    async with open_openai(openai_sim) as client:
        with pytest.raises((openai.APIError, json.JSONDecodeError)):
            await client.chat.completions.create(model=GPT, messages=USER)


async def test_fault_count_clears_itself(openai_sim: OpenAISimulator) -> None:
    openai_sim.fault = Fault("http_503", count=2)
    outcomes = []
    async with open_openai(openai_sim) as client:
        for _ in range(3):
            try:
                await client.chat.completions.create(model=GPT, messages=USER)
                outcomes.append("ok")
            except openai.InternalServerError:
                outcomes.append("503")
    assert outcomes == ["503", "503", "ok"]
    assert openai_sim.fault is None


async def test_fault_probability_is_seeded(openai_sim: OpenAISimulator) -> None:
    async def run_once() -> list[bool]:
        openai_sim.fault = Fault("http_500", probability=0.5, seed=3)
        failed = []
        async with open_openai(openai_sim) as client:
            for _ in range(16):
                try:
                    await client.chat.completions.create(model=GPT, messages=USER)
                    failed.append(False)
                except openai.InternalServerError:
                    failed.append(True)
        return failed

    first = await run_once()
    assert any(first)
    assert not all(first)
    assert await run_once() == first


async def test_fault_duration_clears_it(openai_sim: OpenAISimulator) -> None:
    openai_sim.fault = Fault("http_500", duration=0.05)
    assert await eventually(lambda: openai_sim.fault is None)


# ----- Ollama ---------------------------------------------------------------------------------


async def test_ollama_http_500(ollama_sim: OllamaSimulator) -> None:
    ollama_sim.fault = Fault("http_500")
    async with open_ollama(ollama_sim.base_url) as client:
        with pytest.raises(ollama.ResponseError) as caught:
            await client.chat(model=MODEL, messages=USER)
        with pytest.raises(ollama.ResponseError) as caught_streaming:
            async for _ in await client.chat(model=MODEL, messages=USER, stream=True):
                pass
    for error in (caught.value, caught_streaming.value):
        assert error.status_code == 500
        assert "model runner has unexpectedly stopped" in error.error


async def test_ollama_429_has_retry_after(
    ollama_sim: OllamaSimulator, http: aiohttp.ClientSession
) -> None:
    ollama_sim.fault = Fault("http_429", retry_after=0.5)
    body = {"model": MODEL, "messages": USER}
    async with http.post(ollama_sim.base_url + "/api/chat", json=body) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "0.5"
        assert "error" in await resp.json()


async def test_ollama_error_line(ollama_sim: OllamaSimulator) -> None:
    ollama_sim.fault = Fault("error_line", after_tokens=2)
    received = []
    async with open_ollama(ollama_sim.base_url) as client:
        with pytest.raises(ollama.ResponseError, match="simulated failure"):
            async for part in await client.chat(model=MODEL, messages=USER, stream=True):
                received.append(part.message.content)
    assert received == ["tok0 ", "tok1 "]


async def test_ollama_malformed(ollama_sim: OllamaSimulator) -> None:
    ollama_sim.fault = Fault("malformed", after_tokens=1)
    async with open_ollama(ollama_sim.base_url) as client:
        with pytest.raises(json.JSONDecodeError):
            async for _ in await client.chat(model=MODEL, messages=USER, stream=True):
                pass


async def test_ollama_drop(ollama_sim: OllamaSimulator) -> None:
    ollama_sim.fault = Fault("drop", after_tokens=3)
    received = []
    async with open_ollama(ollama_sim.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async for part in await client.chat(model=MODEL, messages=USER, stream=True):
                received.append(part.message.content)
    assert received == ["tok0 ", "tok1 ", "tok2 "]


async def test_ollama_refuse(ollama_sim: OllamaSimulator) -> None:
    await ollama_sim.set_fault(Fault("refuse"))
    async with open_ollama(ollama_sim.base_url) as client:
        with pytest.raises(ConnectionError):
            await client.chat(model=MODEL, messages=USER)
        await ollama_sim.set_fault(None)
        assert (await client.chat(model=MODEL, messages=USER)).done is True


# ----- disconnects and shutdown ---------------------------------------------------------------


async def leave_mid_stream_ollama(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "messages": USER}
    async with http.post(sim.base_url + "/api/chat", json=body) as resp:
        await resp.content.readline()
        await resp.content.readline()
        resp.close()  # the connection goes, not back to the pool


async def leave_mid_stream_openai(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {"model": GPT, "messages": USER, "stream": True}
    async with http.post(sim.base_url + "/chat/completions", json=body) as resp:
        await resp.content.readline()
        await resp.content.readline()
        resp.close()


@pytest.mark.parametrize(
    ("make", "leave"),
    [
        (lambda: OllamaSimulator(SLOW), leave_mid_stream_ollama),
        (lambda: OpenAISimulator(SLOW), leave_mid_stream_openai),
    ],
    ids=["ollama", "openai"],
)
async def test_client_leaving_mid_stream_is_counted(
    make: Callable[[], Simulator],
    leave: Callable[[Simulator, aiohttp.ClientSession], Awaitable[None]],
    http: aiohttp.ClientSession,
) -> None:
    async with make() as sim:
        await leave(sim, http)
        assert await eventually(lambda: sim.stats.disconnects == 1)
        assert await eventually(lambda: sim.stats.in_flight == 0)
        assert sim.stats.completed == 0
        assert sim.stats.requests == 1


async def test_stop_ends_hanging_requests(http: aiohttp.ClientSession) -> None:
    sim = OllamaSimulator(fault=Fault("hang"))
    await sim.start()
    body = {"model": MODEL, "messages": USER}
    request = asyncio.create_task(http.post(sim.base_url + "/api/chat", json=body))
    assert await eventually(lambda: sim.stats.in_flight == 1)
    await sim.stop()
    with pytest.raises(aiohttp.ClientError):
        await request
    assert sim.stats.in_flight == 0
    assert sim.stats.disconnects == 0  # stopping is not a client leaving
    await sim.stop()  # idempotent


# ----- control endpoint -----------------------------------------------------------------------


async def test_control_endpoint_changes_a_running_simulator(
    ollama_sim: OllamaSimulator, http: aiohttp.ClientSession
) -> None:
    config = ollama_sim.base_url + "/_sim/config"
    update = {"profile": {"answer_tokens": 3}, "fault": {"kind": "http_503", "count": 1}}
    async with http.post(config, json=update) as resp:
        assert resp.status == 200
        assert (await resp.json())["fault"]["kind"] == "http_503"
    assert ollama_sim.profile == SimProfile(answer_tokens=3)

    async with open_ollama(ollama_sim.base_url) as client:
        with pytest.raises(ollama.ResponseError) as caught:
            await client.chat(model=MODEL, messages=USER)
        assert caught.value.status_code == 503
        reply = await client.chat(model=MODEL, messages=USER)
    assert reply.message.content == "tok0 tok1 tok2 "

    async with http.post(config, json={"profile": "local-8b"}) as resp:
        assert resp.status == 200
    assert ollama_sim.profile == profile_by_name("local-8b")

    async with http.get(ollama_sim.base_url + "/_sim/stats?bodies=1") as resp:
        stats = await resp.json()
    assert stats["requests"] == 2
    assert stats["completed"] == 2
    assert stats["bodies"][-1]["model"] == MODEL

    for bad in ({"fault": {"kind": "explode"}}, {"profile": "huge"}, {"speed": 1}, [1]):
        async with http.post(config, json=bad) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]


async def test_control_endpoint_refuse_for_a_while(
    openai_sim: OpenAISimulator, http: aiohttp.ClientSession
) -> None:
    update = {"fault": {"kind": "refuse", "duration": 0.2}}
    async with http.post(openai_sim.root_url + "/_sim/config", json=update) as resp:
        assert resp.status == 200
    assert openai_sim.fault is not None
    async with open_openai(openai_sim) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model=GPT, messages=USER)
        assert await eventually(lambda: openai_sim.fault is None, limit=3.0)
        reply = await client.chat.completions.create(model=GPT, messages=USER)
    assert reply.choices[0].message.content


# ----- CLI ------------------------------------------------------------------------------------


async def test_cli_serves_until_cancelled(
    capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession
) -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(
        [
            "openai",
            "--port",
            "0",
            "--profile",
            "local-8b",
            "--ttft-ms",
            "0-1",
            "--answer-tokens",
            "4",
        ]
    )
    server = asyncio.create_task(run(args))
    printed = ""
    for _ in range(int(POLL_LIMIT / POLL)):
        printed += capsys.readouterr().out
        if printed or server.done():
            break
        await asyncio.sleep(POLL)
    match = re.search(r"simulated openai server on (http://127\.0\.0\.1:\d+) \(profile", printed)
    assert match is not None, printed
    root = match.group(1)
    try:
        body = {"model": GPT, "messages": USER}
        async with http.post(root + "/v1/chat/completions", json=body) as resp:
            reply = await resp.json()
        assert reply["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 "
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(root + "/v1/models"):
            pass


def test_cli_rejects_bad_ranges() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    configure_parser(parser)
    for bad in (["ollama", "--ttft-ms", "60-30"], ["ollama", "--tokens-per-second", "0"]):
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(bad)
