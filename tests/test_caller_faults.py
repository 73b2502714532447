"""Caller faults are not deployment faults: one caller cannot take a deployment from others.

An OpenAI-compatible upstream written here rejects what a caller chose to send
(tools it does not take: 400; the `user` field picks 404, 413 or 422 too) and
answers slowly when asked, so that a caller's tiny `timeout` runs out first. A
trickle of such requests interleaved with good ones from another caller must
leave the good ones at zero failures and the deployment up; the same trickle of
upstream 500s does take it out of rotation, as it should.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from sidecar.cli.serve import SidecarProcess
from sidecar.health import State
from sidecar.health.tracker import DeploymentHealth
from tests.bridge_harness import KEY, USER, http_session, running_bridge
from tests.harness import make_config

_ANSWER = (
    b'data: {"choices":[{"index":0,"delta":{"content":"fine"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


@asynccontextmanager
async def picky_upstream() -> AsyncIterator[str]:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        user = body.get("user", "")
        if "tools" in body:
            return web.json_response({"error": {"message": "tools are not supported"}}, status=400)
        if user in ("404", "413", "422", "500"):
            return web.json_response({"error": {"message": f"status {user}"}}, status=int(user))
        if user == "slow":
            await asyncio.sleep(0.3)
        return web.Response(body=_ANSWER, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **fields}


_THRESHOLD = 3
_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
CALLER_FAULTS = [
    pytest.param(_chat(tools=_TOOLS), id="tools-rejected-400"),
    pytest.param(_chat(user="404"), id="404"),
    pytest.param(_chat(user="413"), id="413"),
    pytest.param(_chat(user="422"), id="422"),
    pytest.param(_chat(timeout=1e-9), id="timeout-1e-9"),
    pytest.param(_chat(user="slow", timeout=0.05), id="deadline-before-first-token"),
]


async def _trickle(
    bridge_root: str, bad: dict[str, Any], health: DeploymentHealth, rounds: int = 4
) -> tuple[list[int], list[int], list[State]]:
    """`rounds` bursts of bad requests (as many as the failure threshold, so that they
    would open the circuit if they counted), each followed by good ones from another
    caller."""
    bad_statuses: list[int] = []
    good_statuses: list[int] = []
    # The deployment's state after each burst: a call still tries a deployment that
    # looks down when it is the only one, so the good calls alone would not tell.
    states: list[State] = []
    url = f"{bridge_root}/v1/chat/completions"
    async with http_session() as bad_caller, http_session() as good_caller:
        for _ in range(rounds):
            for _ in range(_THRESHOLD):
                async with bad_caller.post(url, json=bad) as response:
                    bad_statuses.append(response.status)
                    await response.read()
            states.append(health.state)
            for stream in (False, True):
                async with good_caller.post(url, json=_chat(stream=stream)) as response:
                    good_statuses.append(response.status)
                    await response.read()
    return bad_statuses, good_statuses, states


@asynccontextmanager
async def _stack() -> AsyncIterator[tuple[str, SidecarProcess]]:
    async with picky_upstream() as upstream:
        config = make_config(
            [("m", "openai/x", {"api_base": upstream})],
            general_settings={"master_key": KEY},
            health={"failure_threshold": _THRESHOLD, "cooldown": 30, "probe_interval": 0},
        )
        async with running_bridge(config, "in-process") as bridge:
            yield bridge.root, bridge.sidecar


@pytest.mark.parametrize("bad", CALLER_FAULTS)
async def test_a_trickle_of_caller_faults_leaves_other_callers_at_zero_failures(
    bad: dict[str, Any],
) -> None:
    async with _stack() as (root, sidecar):
        health = sidecar.engine.health["m/0"]
        bad_statuses, good_statuses, states = await _trickle(root, bad, health)
        assert all(400 <= status < 600 for status in bad_statuses)
        assert good_statuses == [200] * len(good_statuses)
        assert states == [State.UP] * len(states)
        assert health.consecutive_failures == 0


async def test_deployment_faults_still_count() -> None:
    # The same trickle of upstream 500s is evidence: the deployment cools down.
    async with _stack() as (root, sidecar):
        health = sidecar.engine.health["m/0"]
        bad_statuses, _, states = await _trickle(root, _chat(user="500"), health, rounds=1)
        assert bad_statuses == [503] * _THRESHOLD
        assert states == [State.COOLING]


async def test_a_caller_fault_names_the_upstream_status_not_the_deployment_down() -> None:
    async with _stack() as (root, _), aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {KEY}"}
        url = f"{root}/v1/chat/completions"
        async with session.post(url, json=_chat(tools=_TOOLS), headers=headers) as response:
            body = orjson.loads(await response.read())
        assert response.status == 400
        assert "upstream answered HTTP 400: tools are not supported" in body["error"]["message"]
