"""A whole (unary) answer is bounded: an upstream that never stops cannot grow the process.

The hostile upstream streams tokens for ever. A unary call stops at
`limits.max_answer_chars` with an error naming the limit, or moves on to the
next candidate when the plan has one; the process's resident memory (read from
/proc) stays flat, and the upstream connection is closed.
"""

from __future__ import annotations

import os

import aiohttp
import grpc
import pytest

from sidecar.config import SidecarConfig
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from tests.bridge_harness import KEY, USER, running_bridge
from tests.harness import chat_request, make_config, wait_until
from tests.hostile import HostileUpstream

LIMIT = 1_000_000
AUTH = (("authorization", f"Bearer {KEY}"),)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _config(hostile: HostileUpstream) -> SidecarConfig:
    return make_config(
        [
            ("endless", "openai/m", {"api_base": hostile.url("endless")}),
            ("endless-then-ok", "openai/m", {"api_base": hostile.url("endless")}),
            ("ok", "openai/m", {"api_base": hostile.url("ok")}),
        ],
        general_settings={"master_key": KEY},
        litellm_settings={"fallbacks": [{"endless-then-ok": ["ok"]}]},
        limits={"max_answer_chars": LIMIT},
        timeouts={"first_token": 5, "idle": 5, "total": 60},
    )


@pytest.mark.parametrize("mode", ["in-process", "remote"])
async def test_an_endless_unary_answer_stops_at_the_limit(mode: str) -> None:
    async with HostileUpstream() as hostile, running_bridge(_config(hostile), mode) as bridge:
        before = _rss()
        url = f"{bridge.root}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(3):
                async with http.post(url, json={"model": "endless", "messages": USER}) as response:
                    assert response.status == 502
                    error = (await response.json())["error"]
                assert "limits.max_answer_chars" in error["message"]
                assert f"{LIMIT:,}" in error["message"]
        grown = _rss() - before
        assert grown < 150 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
        # The upstream's endless stream was cut off, not left running.
        assert await wait_until(lambda: not hostile.busy, within=5)


async def test_grpc_unary_names_the_limit_and_falls_back_when_it_can() -> None:
    async with (
        HostileUpstream() as hostile,
        running_bridge(_config(hostile), "in-process") as bridge,
        grpc.aio.insecure_channel(f"127.0.0.1:{bridge.sidecar.grpc_port}") as channel,
    ):
        stub = pb_grpc.RouterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Chat(chat_request("endless"), timeout=30, metadata=AUTH)
        assert failed.value.code() is grpc.StatusCode.INTERNAL
        assert "limits.max_answer_chars" in (failed.value.details() or "")
        answer = await stub.Chat(chat_request("endless-then-ok"), timeout=30, metadata=AUTH)
        assert (answer.content, answer.route.deployment) == ("tok ", "ok/0")
        assert answer.route.attempts == 2
