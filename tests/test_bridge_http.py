"""The bridge over raw HTTP: SSE framing byte by byte, headers, auth, probes, every kind of bad
input, body limits, and draining on stop. Both modes unless the test is about one server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.app import BridgeSettings
from sidecar.cli.serve import SidecarProcess
from sidecar.engine import Engine
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator, SimProfile
from tests.bridge_harness import (
    EXPECTED,
    KEY,
    MODES,
    USER,
    Bridge,
    http_session,
    running_bridge,
    sse_events,
    standard_config,
)
from tests.harness import wait_until

LIMIT = 64 * 1024


@pytest.fixture(params=MODES)
async def bridge(
    request: pytest.FixtureRequest, ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> AsyncIterator[Bridge]:
    config = standard_config(ollama, openai_sim)
    async with running_bridge(config, request.param, max_body_bytes=LIMIT) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_session() as session:
        yield session


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fast-local", "messages": USER, **fields}


# -- SSE framing and headers -----------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [True, False])
async def test_sse_framing(
    bridge: Bridge, http: aiohttp.ClientSession, include_usage: bool
) -> None:
    body = chat(stream=True, stream_options={"include_usage": include_usage})
    headers = {"x-request-id": "abc-123"}
    async with http.post(f"{bridge.base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-request-id"] == "abc-123"
        assert r.headers["x-sidecar-deployment"] == "fast-local/0"
        assert r.headers["x-sidecar-locality"] == "local"
        assert r.headers["x-sidecar-attempts"] == "1"
        raw = await r.read()
    payloads = sse_events(raw)
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert chunk["id"] == "chatcmpl-abc-123"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "fast-local"
        assert chunk["created"] == chunks[0]["created"]
        assert ("usage" in chunk) is include_usage
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    tail = chunks[-2:] if include_usage else chunks[-1:]
    body_chunks = chunks[1 : len(chunks) - len(tail)]
    assert "".join(c["choices"][0]["delta"]["content"] for c in body_chunks) == EXPECTED
    assert tail[0]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1])
        assert tail[1]["choices"] == []
        usage = tail[1]["usage"]
        assert usage["completion_tokens"] == 20
        assert usage["total_tokens"] == usage["prompt_tokens"] + 20


async def test_each_token_is_sent_as_it_arrives(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    # At 50 tokens/s every token arrives alone: each must reach the caller as its own event.
    ollama.profile = SimProfile(tokens_per_second=(50.0, 50.0), answer_tokens=5)
    async with (
        running_bridge(standard_config(ollama, openai_sim), "in-process") as bridge,
        http_session() as http,
        http.post(f"{bridge.base_url}/chat/completions", json=chat(stream=True)) as r,
    ):
        payloads = sse_events(await r.read())
    contents = [orjson.loads(p)["choices"][0]["delta"].get("content") for p in payloads[1:-2]]
    assert contents == [f"tok{i} " for i in range(5)]


async def test_request_id_is_generated_and_checked(
    bridge: Bridge, http: aiohttp.ClientSession
) -> None:
    url = f"{bridge.base_url}/chat/completions"
    async with http.post(url, json=chat()) as r:
        generated = r.headers["x-request-id"]
        assert (await r.json())["id"] == f"chatcmpl-{generated}"
    async with http.post(url, json=chat()) as r:
        assert r.headers["x-request-id"] != generated
    async with http.post(url, json=chat(), headers={"x-request-id": "x" * 300}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "x-request-id"


# -- bad input --------------------------------------------------------------------------------

BAD_BODIES: list[tuple[bytes, str | None, str]] = [
    (b"", None, "empty"),
    (b"{not json", None, "not valid JSON"),
    (b'{"model": "fast-local", "messages": "\xff\xfe"}', None, "not valid UTF-8"),
    (b"[1, 2]", None, "JSON object"),
    (b'"hello"', None, "JSON object"),
    (orjson.dumps({"messages": USER}), "model", "model"),
    (orjson.dumps({"model": 3, "messages": USER}), "model", "number"),
    (orjson.dumps({"model": "fast-local"}), "messages", "required"),
    (orjson.dumps(chat(messages="hi")), "messages", "array"),
    (orjson.dumps(chat(messages=[])), "messages", "at least one"),
    (orjson.dumps(chat(messages=["hi"])), "messages[0]", "message object"),
    (orjson.dumps(chat(messages=[{"content": "x"}])), "messages[0].role", "role"),
    (orjson.dumps(chat(messages=[{"role": "user"}])), "messages[0].content", "required"),
    (orjson.dumps(chat(messages=[{"role": "user", "content": 5}])), "messages[0].content", ""),
    (
        orjson.dumps(chat(messages=[{"role": "user", "content": [{"type": "audio"}]}])),
        "messages[0].content[0].type",
        "not supported",
    ),
    (
        orjson.dumps(chat(messages=[{"role": "user", "content": [{"type": "text"}]}])),
        "messages[0].content[0].text",
        "string",
    ),
    (
        orjson.dumps(chat(messages=[{"role": "tool", "content": "42"}])),
        "messages[0].tool_call_id",
        "required",
    ),
    (
        orjson.dumps(chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c"}]}])),
        "messages[0].tool_calls[0].function",
        "",
    ),
    (orjson.dumps(chat(stream="yes")), "stream", "boolean"),
    (orjson.dumps(chat(stream_options={"include_usage": True})), "stream_options", "stream"),
    (orjson.dumps(chat(max_tokens=1.5)), "max_tokens", "integer"),
    (orjson.dumps(chat(max_completion_tokens=True)), "max_completion_tokens", "integer"),
    (orjson.dumps(chat(temperature="hot")), "temperature", "number"),
    (orjson.dumps(chat(max_tokens=0)), "max_tokens", "at least 1"),
    (orjson.dumps(chat(top_p=3)), "top_p", "between"),
    (orjson.dumps(chat(stop=[1])), "stop", "string"),
    (orjson.dumps(chat(seed="s")), "seed", "integer"),
    (orjson.dumps(chat(n=3)), "n", "n=1"),
    (orjson.dumps(chat(tools={"a": 1})), "tools", "array"),
    (orjson.dumps(chat(tools=[{"type": "function"}])), "tools[0].function", ""),
    (orjson.dumps(chat(tool_choice="always")), "tool_choice", "none, auto, required"),
    (orjson.dumps(chat(response_format="json")), "response_format", "object"),
    (orjson.dumps(chat(parallel_tool_calls="no")), "parallel_tool_calls", "boolean"),
    (orjson.dumps(chat(user=7)), "user", "string"),
    (orjson.dumps(chat(metadata=["x"])), "metadata", "object"),
    (orjson.dumps(chat(timeout=0)), "timeout", "above 0"),
    (orjson.dumps(chat(metadata={"no_fallback": "maybe"})), "metadata.no_fallback", "boolean"),
]


async def test_every_bad_body_is_a_400_naming_the_problem(
    bridge: Bridge, http: aiohttp.ClientSession
) -> None:
    url = f"{bridge.base_url}/chat/completions"
    headers = {"Content-Type": "application/json"}
    for raw, param, words in BAD_BODIES:
        for data in (raw, _streamed(raw)):
            async with http.post(url, data=data, headers=headers) as r:
                error = (await r.json())["error"]
                assert r.status == 400, (raw, error)
            assert r.headers["content-type"] == "application/json"
            assert error["type"] == "invalid_request_error"
            assert error["param"] == param, (raw, error)
            assert words in error["message"], (raw, error)
    # Nothing above broke the server.
    async with http.post(url, json=chat()) as r:
        assert r.status == 200


def _streamed(raw: bytes) -> bytes:
    """The same bad body asking for a stream, where that leaves the fault in place."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(body, dict) or "stream" in body or "stream_options" in body:
        return raw
    return orjson.dumps({**body, "stream": True})


async def test_oversized_bodies_are_refused(bridge: Bridge, http: aiohttp.ClientSession) -> None:
    url = f"{bridge.base_url}/chat/completions"
    big = orjson.dumps(chat(messages=[{"role": "user", "content": "x" * LIMIT}]))
    async with http.post(url, data=big, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        error = (await r.json())["error"]
        assert "at most 65,536 bytes" in error["message"]
        assert error["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is enforced while the body is read.
        for _ in range(8):
            yield b" " * (LIMIT // 4)

    async with http.post(url, data=chunked()) as r:
        assert r.status == 413
    async with http.post(url, json=chat()) as r:
        assert r.status == 200


# -- auth, routes, probes ---------------------------------------------------------------------


async def test_auth_on_every_endpoint_but_the_probes(bridge: Bridge) -> None:
    guarded = [("GET", "/v1/models"), ("GET", "/v1/models/fast-local"), ("GET", "/health")]
    guarded.append(("POST", "/v1/chat/completions"))
    open_paths = ["/health/liveliness", "/health/readiness"]
    async with aiohttp.ClientSession() as anonymous:
        for method, path in guarded:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
                async with anonymous.request(method, bridge.root + path, headers=headers) as r:
                    assert r.status == 401, (path, headers)
                    assert r.headers["www-authenticate"] == "Bearer"
                    error = (await r.json())["error"]
                    assert error["code"] == "invalid_api_key"
                    assert KEY not in error["message"]
        for path in open_paths:
            async with anonymous.get(bridge.root + path) as r:
                assert r.status == 200, path
        # The scheme is case-insensitive, as RFC 7235 says.
        async with anonymous.get(
            bridge.root + "/v1/models", headers={"Authorization": f"bearer {KEY}"}
        ) as r:
            assert r.status == 200


async def test_unknown_path_and_wrong_method(bridge: Bridge, http: aiohttp.ClientSession) -> None:
    async with http.get(bridge.root + "/v1/audio/speech") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "unknown_url"
    async with http.get(bridge.base_url + "/chat/completions") as r:
        assert r.status == 405
        assert r.headers["allow"] == "POST"
    # LiteLLM's paths without the /v1 prefix answer too.
    async with http.post(bridge.root + "/chat/completions", json=chat()) as r:
        assert r.status == 200
    async with http.get(bridge.root + "/models") as r:
        assert r.status == 200


async def test_health_endpoints(
    bridge: Bridge, http: aiohttp.ClientSession, ollama: OllamaSimulator
) -> None:
    async with http.get(bridge.root + "/health") as r:
        assert r.status == 200
        health = await r.json()
    assert (health["status"], health["healthy_count"], health["unhealthy_count"]) == ("ok", 4, 0)
    assert health["mode"] == bridge.mode
    assert health["simulated"] is False
    deployments = {d["deployment"]: d for d in health["deployments"]}
    assert set(deployments) == {"fast-local/0", "vllm-local/0", "cloud-fast/0", "gemini/0"}
    assert deployments["cloud-fast/0"]["locality"] == "cloud"
    assert deployments["fast-local/0"]["provider"] == "ollama"
    assert deployments["fast-local/0"]["status"] == "up"
    # What the health tracker learnt from a failed call shows, without calling any upstream.
    requests = ollama.stats.requests
    ollama.fault = Fault("http_503", count=1)
    async with http.post(f"{bridge.base_url}/chat/completions", json=chat()) as r:
        assert r.status == 503
    async with http.get(bridge.root + "/health") as r:
        fast = {d["deployment"]: d for d in (await r.json())["deployments"]}["fast-local/0"]
    assert "HTTP 503" in fast["last_error"]
    assert ollama.stats.requests == requests + 1
    async with http.get(bridge.root + "/health/liveliness") as r:
        assert await r.json() == "I'm alive!"
    async with http.get(bridge.root + "/health/readiness") as r:
        assert await r.json() == {"status": "healthy", "mode": bridge.mode}


async def test_remote_bridge_reports_an_unreachable_sidecar(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    async with running_bridge(standard_config(ollama, openai_sim), "remote") as bridge:
        await bridge.sidecar.stop(grace=0)
        async with http_session() as http:
            async with http.get(bridge.root + "/health/readiness") as r:
                assert r.status == 503
                assert "sidecar at 127.0.0.1" in (await r.json())["reason"]
            async with http.post(bridge.base_url + "/chat/completions", json=chat()) as r:
                assert r.status == 503
                assert "sidecar at 127.0.0.1" in (await r.json())["error"]["message"]
            async with http.get(bridge.base_url + "/models") as r:
                assert r.status == 503


# -- draining ----------------------------------------------------------------------------------


async def test_stop_lets_streams_in_flight_finish(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    ollama.profile = SimProfile(tokens_per_second=(100.0, 100.0), answer_tokens=20)
    config = standard_config(ollama, openai_sim)
    async with running_bridge(config, "in-process") as bridge, http_session() as http:
        url = f"{bridge.base_url}/chat/completions"
        async with http.post(url, json=chat(stream=True)) as r:
            first = await r.content.readuntil(b"\n\n")
            assert b'"role":"assistant"' in first
            stopping = asyncio.create_task(bridge.sidecar.stop(grace=5))
            rest = await r.read()
        await stopping
        assert rest.endswith(b"data: [DONE]\n\n")
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(url, json=chat()):
                pass


async def test_stop_cuts_off_streams_after_the_grace(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    ollama.profile = SimProfile(tokens_per_second=(20.0, 20.0), answer_tokens=200)
    config = standard_config(ollama, openai_sim)
    async with running_bridge(config, "in-process") as bridge, http_session() as http:
        url = f"{bridge.base_url}/chat/completions"
        async with http.post(url, json=chat(stream=True)) as r:
            await r.content.readuntil(b"\n\n")
            await bridge.sidecar.stop(grace=0.1)
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        assert await wait_until(lambda: ollama.stats.disconnects == 1, within=1.0)


async def test_settings_default_to_eight_mebibytes() -> None:
    assert BridgeSettings().max_body_bytes == 8 * 1024 * 1024
    assert "sk-" not in repr(BridgeSettings(master_key="sk-secret"))


async def test_http_port_in_use_is_a_clear_error(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    config = standard_config(ollama, openai_sim)
    async with running_bridge(config, "in-process") as bridge:
        taken = bridge.sidecar.http_port
        second = SidecarProcess(Engine(config), grpc_port=0, http_port=taken)
        with pytest.raises(OSError, match=f"cannot listen for HTTP on 127.0.0.1:{taken}"):
            await second.start()
        # The half-started sidecar let its gRPC port go again.
        with socket.create_server(("127.0.0.1", second.grpc_port)):
            pass
