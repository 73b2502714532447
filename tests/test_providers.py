"""Providers against scripted upstreams that send exactly the bytes a test chooses.

The simulators speak the protocols the way well-behaved servers do; these cases
cover what real servers also do: CRLF line ends, comments and named events in
SSE, frames split across TCP writes, streams that end early.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from sidecar.config.model import Deployment, ProviderKind
from sidecar.errors import UpstreamMalformed, UpstreamRateLimited, UpstreamUnavailable
from sidecar.providers import HttpPool, ProbeStatus, ProviderRegistry
from sidecar.providers.ollama import listed_names
from sidecar.simulate import GeminiSimulator, OllamaSimulator, OpenAISimulator, SimProfile
from sidecar.types import ChatRequest, Chunk, Message, Usage
from tests.harness import UPSTREAM_KEY

REQUEST = ChatRequest("m", (Message("user", "hi"),))


@asynccontextmanager
async def scripted(
    writes: Sequence[bytes], status: int = 200, headers: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """An HTTP server answering every POST with `writes`, each flushed on its own."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        for data in writes:
            await response.write(data)
            await asyncio.sleep(0.005)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def collect(kind: ProviderKind, api_base: str) -> list[Chunk]:
    deployment = Deployment("m/0", "m", kind, "model", api_base)
    registry = ProviderRegistry(HttpPool())
    try:
        return [chunk async for chunk in registry.stream(deployment, REQUEST)]
    finally:
        await registry.aclose()


def text(chunks: list[Chunk]) -> str:
    return "".join(c.content for c in chunks)


def sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


ROLE = '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
HELLO = '{"choices":[{"index":0,"delta":{"content":"Hel"}}]}'
WORLD = '{"choices":[{"index":0,"delta":{"content":"lo"}}]}'
FINISH = '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
USAGE = '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'


async def test_sse_with_crlf_comments_named_events_and_split_frames() -> None:
    body = (
        b": keep-alive\r\n\r\n"
        + sse(ROLE).replace(b"\n", b"\r\n")
        + b"event: message\nid: 1\n"
        + sse(HELLO)
        + sse(WORLD)
        + sse(FINISH)
        + sse(USAGE)
        + b"data: [DONE]\n\n"
    )
    # Cut the bytes at awkward places: inside "data:", inside the JSON, between CR and LF.
    cuts = [3, 20, 41, 90, 150, 151, len(body) - 4]
    writes = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    async with scripted(writes) as url:
        chunks = await collect(ProviderKind.OPENAI, url + "/v1")
    assert text(chunks) == "Hello"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == Usage(3, 2)


async def test_sse_multi_line_data_event_is_joined() -> None:
    split = HELLO.replace('"delta":', '"delta":\ndata: ')
    body = f"data: {split}\n\n".encode() + sse(FINISH) + b"data: [DONE]\n\n"
    async with scripted([body]) as url:
        chunks = await collect(ProviderKind.OPENAI, url + "/v1")
    assert text(chunks) == "Hel"


async def test_sse_without_done_but_finished_is_complete() -> None:
    async with scripted([sse(HELLO), sse(FINISH)]) as url:
        chunks = await collect(ProviderKind.OPENAI, url + "/v1")
    assert (text(chunks), chunks[-1].finish_reason) == ("Hel", "stop")


async def test_sse_cut_before_finishing_is_malformed() -> None:
    async with scripted([sse(HELLO)]) as url:
        with pytest.raises(UpstreamMalformed, match="ended before the answer finished"):
            await collect(ProviderKind.OPENAI, url + "/v1")


async def test_sse_error_event_mid_stream() -> None:
    error = '{"error":{"message":"overloaded","type":"server_error"}}'
    async with scripted([sse(HELLO), sse(error)]) as url:
        with pytest.raises(UpstreamUnavailable, match="overloaded"):
            await collect(ProviderKind.OPENAI, url + "/v1")


async def test_openai_error_status_keeps_the_upstream_message() -> None:
    body = (
        b'{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}'
    )
    async with scripted([body], status=429, headers={"Retry-After": "4"}) as url:
        with pytest.raises(UpstreamRateLimited) as err:
            await collect(ProviderKind.OPENAI, url + "/v1")
    assert "HTTP 429: slow down" in err.value.message
    assert err.value.retry_after == 4


async def test_ndjson_lines_split_across_writes() -> None:
    lines = (
        b'{"message":{"role":"assistant","content":"Li"},"done":false}\n'
        b'{"message":{"role":"assistant","content":"ma."},"done":false}\n'
        b'{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
        b'"prompt_eval_count":7,"eval_count":2}\n'
    )
    writes = [lines[:10], lines[10:70], lines[70:71], lines[71:]]
    async with scripted(writes) as url:
        chunks = await collect(ProviderKind.OLLAMA, url)
    assert text(chunks) == "Lima."
    assert chunks[-1].usage == Usage(7, 2)


async def test_ndjson_missing_counts_are_unknown_not_zero() -> None:
    lines = (
        b'{"message":{"role":"assistant","content":"x"},"done":false}\n'
        b'{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}\n'
    )
    async with scripted([lines]) as url:
        chunks = await collect(ProviderKind.OLLAMA, url)
    assert chunks[-1].usage == Usage(None, None)


async def test_ndjson_without_done_line_is_malformed() -> None:
    async with scripted([b'{"message":{"role":"assistant","content":"x"},"done":false}\n']) as url:
        with pytest.raises(UpstreamMalformed, match="without a done line"):
            await collect(ProviderKind.OLLAMA, url)


async def test_buffered_tokens_are_coalesced_into_fewer_chunks() -> None:
    # 200 tokens written back to back arrive faster than they are read: the provider
    # hands over everything already buffered at once instead of one chunk per token.
    burst = SimProfile(ttft=(0.0, 0.0), tokens_per_second=None, answer_tokens=200)
    async with OllamaSimulator(profile=burst) as sim:
        chunks = await collect(ProviderKind.OLLAMA, sim.base_url)
    assert text(chunks).split() == [f"tok{i}" for i in range(200)]
    assert len(chunks) < 200


@pytest.mark.parametrize(
    ("kind", "path", "first", "rest"),
    [
        (
            ProviderKind.OLLAMA,
            "",
            b'{"message":{"role":"assistant","content":"one"},"done":false}\n',
            b'{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}\n',
        ),
        (ProviderKind.OPENAI, "/v1", sse(HELLO), sse(FINISH) + sse(USAGE) + b"data: [DONE]\n\n"),
    ],
    ids=["ollama", "openai"],
)
async def test_a_lone_token_is_never_held_back(
    kind: ProviderKind, path: str, first: bytes, rest: bytes
) -> None:
    # The upstream sends the rest only once the caller has the first token: a provider
    # that waited for more before yielding would never get it.
    relayed = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(first)
        await relayed.wait()
        await response.write(rest)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    deployment = Deployment(
        "m/0", "m", kind, "model", f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    )
    registry = ProviderRegistry(HttpPool())
    chunks: list[Chunk] = []
    try:
        async with asyncio.timeout(10):
            async for chunk in registry.stream(deployment, REQUEST):
                chunks.append(chunk)
                relayed.set()
    finally:
        await registry.aclose()
        await runner.cleanup()
    assert chunks[0].content in ("one", "Hel")
    assert chunks[0].finish_reason is None
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("kind", "path", "good", "bad"),
    [
        (
            ProviderKind.OLLAMA,
            "",
            b'{"message":{"content":"Li"},"done":false}\n{"message":{"content":"ma"},"done":false}\n',
            b"{not json\n",
        ),
        (ProviderKind.OPENAI, "/v1", sse(HELLO) + sse(WORLD), b"data: {not json\n\n"),
    ],
    ids=["ollama", "openai"],
)
async def test_frames_whole_before_a_bad_one_still_reach_the_caller(
    kind: ProviderKind, path: str, good: bytes, bad: bytes
) -> None:
    async with scripted([good + bad]) as url:
        deployment = Deployment("m/0", "m", kind, "model", url + path)
        registry = ProviderRegistry(HttpPool())
        chunks: list[Chunk] = []
        try:
            with pytest.raises(UpstreamMalformed, match="not json"):
                async for chunk in registry.stream(deployment, REQUEST):
                    chunks.append(chunk)
        finally:
            await registry.aclose()
    assert text(chunks) in ("Lima", "Hello")


async def test_tool_calls_from_separate_lines_keep_separate_indexes() -> None:
    lines = (
        b'{"message":{"tool_calls":[{"function":{"name":"a","arguments":{"x":1}}}]},"done":false}\n'
        b'{"message":{"tool_calls":[{"function":{"name":"b","arguments":{}}}]},"done":false}\n'
        b'{"message":{"content":""},"done":true,"done_reason":"stop"}\n'
    )
    async with scripted([lines[:80], lines[80:]]) as url:
        chunks = await collect(ProviderKind.OLLAMA, url)
    calls = [call for c in chunks for call in c.tool_calls]
    assert [(c.name, c.index, c.id) for c in calls] == [("a", 0, "call_0"), ("b", 1, "call_1")]
    assert calls[0].arguments == '{"x":1}'
    assert chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("llama3", {"llama3", "llama3:latest"}),
        ("llama3:8b", {"llama3:8b"}),
        ("library/llama3", {"library/llama3", "library/llama3:latest"}),
        ("host:5000/llama3", {"host:5000/llama3", "host:5000/llama3:latest"}),
        ("host:5000/llama3:70b", {"host:5000/llama3:70b"}),
    ],
)
def test_ollama_names_a_model_without_tag_latest(model: str, names: set[str]) -> None:
    assert listed_names(model) == names


async def test_every_builtin_provider_probes_through_the_registry(
    ollama: OllamaSimulator, openai_sim: OpenAISimulator
) -> None:
    registry = ProviderRegistry(HttpPool())
    try:
        async with GeminiSimulator(api_key=UPSTREAM_KEY) as gemini:
            results = {
                kind: await registry.probe(
                    Deployment("m/0", "m", kind, "llama3", base, api_key=key)
                )
                for kind, base, key in [
                    (ProviderKind.OLLAMA, ollama.base_url, None),
                    (ProviderKind.OPENAI, openai_sim.base_url, UPSTREAM_KEY),
                    (ProviderKind.GEMINI, gemini.base_url, UPSTREAM_KEY),
                ]
            }
        refused = await registry.probe(
            Deployment("m/0", "m", ProviderKind.OPENAI, "x", "http://127.0.0.1:9/v1")
        )
    finally:
        await registry.aclose()
    # The simulated Ollama has the model but has not loaded it before a first call.
    statuses = {kind: r.status if r is not None else None for kind, r in results.items()}
    assert statuses == {
        ProviderKind.OLLAMA: ProbeStatus.COLD,
        ProviderKind.OPENAI: ProbeStatus.READY,
        ProviderKind.GEMINI: ProbeStatus.READY,
    }
    assert refused is not None
    assert refused.status is ProbeStatus.FAILED
    assert all(ProviderRegistry.builtin(kind) for kind in ProviderKind)
