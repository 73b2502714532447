"""Health probes against Ollama-compatible servers that differ from the project's simulators.

Each upstream here is written in the test (aiohttp, not `sidecar.simulate`) and answers
chats while missing an optional endpoint or answering it in a shape of its own. None may
ever be marked down while it answers chats; what it does not offer shows in the status.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from sidecar.cli.status import render_status
from sidecar.config.model import Deployment, HealthConfig, ProviderKind
from sidecar.engine.snapshot import Snapshot
from sidecar.health import HealthTracker, State
from sidecar.health.discovery import discover_context_windows
from sidecar.health.probes import Prober
from sidecar.providers import HttpPool, ProbeResult, ProbeStatus, ProviderRegistry
from tests.harness import chat_request, make_config, running_sidecar, wait_until

MODEL = "llama3.2:8b"
ROUNDS = 4  # probe rounds each case waits for while it sends chats


@dataclass
class Upstream:
    url: str
    hits: Counter[str] = field(default_factory=Counter)


def _tags() -> bytes:
    # A proxy's listing: only the fields Ollama clients read, and no "model" key.
    return orjson.dumps({"models": [{"name": MODEL, "size": 1, "digest": "d"}]})


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    lines = [
        {"model": body["model"], "message": {"role": "assistant", "content": "fine "}},
        {"model": body["model"], "message": {"role": "assistant", "content": "thanks"}},
        {"model": body["model"], "done": True, "done_reason": "stop", "eval_count": 2},
    ]
    # Everything in one write, unlike the simulators' one write per token.
    return web.Response(
        body=b"".join(orjson.dumps(line) + b"\n" for line in lines),
        content_type="application/x-ndjson",
    )


@asynccontextmanager
async def upstream(routes: dict[str, Callable[[], web.Response]]) -> AsyncIterator[Upstream]:
    """An Ollama-compatible server with `/api/chat` and the GET endpoints in `routes`;
    anything else is a 404, as aiohttp answers an unknown path."""
    app = web.Application()
    server = Upstream("")

    def counted(path: str, reply: Callable[[], web.Response]) -> web.RouteDef:
        async def handler(request: web.Request) -> web.Response:
            server.hits[path] += 1
            return reply()

        return web.get(path, handler)

    app.add_routes([web.post("/api/chat", _chat)])
    app.add_routes([counted(path, reply) for path, reply in routes.items()])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def _another_probe(server: Upstream) -> bool:
    before = sum(server.hits.values())
    return await wait_until(lambda: sum(server.hits.values()) > before, 2.0)


def _json(payload: bytes, status: int = 200) -> Callable[[], web.Response]:
    return lambda: web.Response(body=payload, status=status, content_type="application/json")


CASES = [
    pytest.param({"/api/tags": _json(_tags())}, ("/api/ps",), id="no-api-ps"),
    pytest.param(
        {"/api/ps": _json(orjson.dumps({"models": [{"name": MODEL}]}))},
        ("/api/tags",),
        id="no-api-tags",
    ),
    pytest.param(
        {"/api/tags": _json(b"{}", status=405), "/api/ps": _json(b"{}", status=501)},
        ("/api/tags", "/api/ps"),
        id="neither-405-501",
    ),
    pytest.param(
        {"/api/tags": _json(b'{"models": 5}'), "/api/ps": _json(b"<html>ok</html>")},
        (),
        id="odd-shapes",
    ),
]


@pytest.mark.parametrize(("routes", "not_offered"), CASES)
async def test_never_marked_down_while_it_answers_chats(
    routes: dict[str, Callable[[], web.Response]],
    not_offered: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with upstream(routes) as server:
        config = make_config(
            [("fast-local", f"ollama/{MODEL}", {"api_base": server.url})],
            health={"probe_interval": 0.02, "probe_timeout": 1, "failure_threshold": 1},
        )
        with caplog.at_level(logging.INFO, logger="sidecar.health.probes"):
            async with running_sidecar(config) as sidecar:
                health = sidecar.engine.health
                seen: list[State] = []
                health.on_change(lambda: seen.append(health["fast-local/0"].state))
                probed = sum(server.hits.values())
                for _ in range(ROUNDS):
                    reply = await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
                    assert reply.content == "fine thanks"
                    if len(not_offered) < 2:  # with nothing left to ask, probing stops
                        assert await _another_probe(server)
                await asyncio.sleep(0.1)  # a few more rounds with no traffic at all
                assert sum(server.hits.values()) > probed or len(not_offered) == 2
                assert health.is_available("fast-local/0")
                assert set(seen) <= {State.UP, State.COLD}, seen
                h = health["fast-local/0"]
                assert h.probes_not_offered == not_offered
                status = render_status("test", 1, sidecar.engine.models())
                for path in not_offered:
                    assert f"probes not offered: {', '.join(not_offered)}" in status
                    assert path in status
    said = [r.getMessage() for r in caplog.records if "does not offer" in r.getMessage()]
    assert len(said) == len(not_offered)  # once each, however many rounds ran


async def test_a_model_that_is_not_pulled_is_rechecked_soon_without_backoff() -> None:
    listing = {"models": [{"name": "other:latest"}]}
    async with upstream({"/api/tags": _json(orjson.dumps(listing))}) as server:
        config = make_config(
            [("fast-local", f"ollama/{MODEL}", {"api_base": server.url})],
            health={"probe_interval": 30, "not_pulled_recheck": 0.05, "cooldown": 30},
        )
        async with running_sidecar(config) as sidecar:
            health = sidecar.engine.health
            assert await wait_until(lambda: server.hits["/api/tags"] >= 3, 3.0)
            h = health["fast-local/0"]
            assert h.state is State.NOT_PULLED
            assert h.relapses == 0  # never a doubling cooldown
            assert health.cooldown_left("fast-local/0") <= 0.05
            status = render_status("test", 1, sidecar.engine.models())
            assert "not_pulled" in status
            assert f"model {MODEL!r} is not pulled" in status
            # The only candidate looks unhealthy, so the call tries it anyway; its answer
            # shows the model is there after all, and outweighs the next probes.
            reply = await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
            assert reply.content == "fine thanks"
            assert health["fast-local/0"].state is State.UP
            assert await _another_probe(server)
            assert await _another_probe(server)
            assert health["fast-local/0"].state is State.UP


class _Surprising(ProviderRegistry):
    """Probes that raise what no provider is meant to raise, on every other call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult | None:
        self.calls += 1
        if self.calls % 2:
            raise RuntimeError("a bug in a probe")
        return ProbeResult(ProbeStatus.READY)


async def test_an_unexpected_probe_failure_is_logged_and_probing_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployment = Deployment("m/0", "m", ProviderKind.OLLAMA, "x", "http://127.0.0.1:9")
    settings = HealthConfig(probe_interval=0.01)
    health = HealthTracker([deployment], settings)
    registry = _Surprising()
    prober = Prober([deployment], health, registry, settings)
    with caplog.at_level(logging.ERROR, logger="sidecar.health.probes"):
        task = asyncio.create_task(prober.run())
        try:
            assert await wait_until(lambda: registry.calls >= 6, 3.0)
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await registry.aclose()
    failures = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failures) >= 3
    assert failures[0].exc_info is not None  # with its traceback
    assert health["m/0"].state is State.UP


async def test_a_probe_without_endpoints_tells_what_it_lacks() -> None:
    async with upstream({}) as server:
        deployment = Deployment("m/0", "m", ProviderKind.OLLAMA, MODEL, server.url)
        registry = ProviderRegistry()
        try:
            result = await registry.probe(deployment)
            assert result == ProbeResult(
                ProbeStatus.UNKNOWN, "", ("/api/tags", "/api/ps"), exhausted=True
            )
            openai_like = Deployment("o/0", "o", ProviderKind.OPENAI, MODEL, server.url)
            assert await registry.probe(openai_like) == ProbeResult(
                ProbeStatus.UNKNOWN, not_offered=("/models",), exhausted=True
            )
        finally:
            await registry.aclose()


def test_status_shows_cold_rather_than_busy() -> None:
    deployment = Deployment("m/0", "m", ProviderKind.OLLAMA, MODEL, "http://127.0.0.1:9")
    health = HealthTracker([deployment])
    health.probe_cold("m/0", f"model {MODEL!r} is not loaded yet: the first call will be slower")
    config = make_config([("m", f"ollama/{MODEL}", {"api_base": "http://127.0.0.1:9"})])
    text = render_status("test", 1, Snapshot.build(config).models(health))
    assert " cold " in text
    assert "busy" not in text
    assert "first call will be slower" in text


async def test_discovery_reads_api_show_when_api_ps_is_not_offered() -> None:
    async def show(request: web.Request) -> web.Response:
        info = {"general.architecture": "llama", "llama.context_length": 32768}
        return web.json_response({"parameters": "", "model_info": info})

    app = web.Application()
    app.add_routes([web.post("/api/show", show)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    pool = HttpPool()
    try:
        config = make_config([("fast-local", "ollama/unknown-model", {"api_base": url})])
        found = await discover_context_windows(config, pool, within=2.0)
        assert found.groups["fast-local"].deployments[0].context_window == 32768
    finally:
        await pool.aclose()
        await runner.cleanup()
