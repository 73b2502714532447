"""No secret leaves: recognisable keys configured, every error path provoked, every channel read.

The keys (an OpenAI-shaped one, one shaped like no known key, the master key and a
password in an api_base) all contain SECRET. A hostile upstream breaks HTTP and
echoes whatever it is sent; the sidecar serves both doors, with a standalone
bridge in front of it too. Then every output is collected (gRPC details,
trailers and debug strings, HTTP bodies and headers, /health, ListModels,
`llm-sidecar status`, the banner, `check-config`, a config error, every log
record) and none may hold a key, nor the Basic credentials made from the
password.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from bridge.app import BridgeSettings
from bridge.remote import RemoteBackend
from bridge.server import BridgeServer
from sidecar.cli.main import main
from sidecar.cli.serve import SidecarProcess, banner
from sidecar.cli.status import fetch_status
from sidecar.config import parse_config
from sidecar.engine import Engine
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.runtime.standins import StandIns
from tests.harness import chat_request, wait_until
from tests.hostile import HostileUpstream

UPSTREAM_KEY = "sk-SECRETupstream0123456789"
ODD_KEY = "zzSECRETodd-4242-key"  # shaped like no known key: only the configured list finds it
MASTER = "mk-SECRETmaster-13579"
PASSWORD = "pw-SECRETurl-24680"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
FORBIDDEN = ("SECRET", BASIC)
AUTH = (("authorization", f"Bearer {MASTER}"),)
BROKEN = ("ssh", "bad-status", "no-colon", "long-header", "echo-401", "echo-frame", "echo-error")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _raw_config(hostile: HostileUpstream) -> dict[str, Any]:
    userinfo = f"user:{PASSWORD}"
    entries: list[dict[str, Any]] = []
    for mode in (*BROKEN, "ok"):
        key = ODD_KEY if mode == "echo-401" else UPSTREAM_KEY
        params = {"model": "openai/m", "api_base": hostile.url(mode, userinfo), "api_key": key}
        entries.append({"model_name": mode, "litellm_params": params})
    entries.append(
        {
            # No api_key: the URL's credentials go as Basic auth, and are echoed back.
            "model_name": "ollama-echo",
            "litellm_params": {
                "model": "ollama/m",
                "api_base": hostile.url("echo-ndjson", userinfo),
            },
        }
    )
    refused = f"http://{userinfo}@127.0.0.1:{_closed_port()}"
    entries.append(
        {
            "model_name": "refused",
            "litellm_params": {"model": "openai/m", "api_base": refused, "api_key": UPSTREAM_KEY},
        }
    )
    return {
        "model_list": entries,
        "general_settings": {"master_key": MASTER},
        "timeouts": {"first_token": 5, "idle": 5, "total": 10},
        # Keep every deployment in rotation, so each call reaches the hostile upstream,
        # and probe often, so probe errors reach /health too.
        "health": {"failure_threshold": 1000, "min_requests": 1000, "probe_interval": 0.05},
    }


async def _grpc_outputs(stub: pb_grpc.RouterStub, alias: str) -> tuple[list[str], list[str]]:
    """What a unary and a streaming call show, and the status codes they ended with."""
    out: list[str] = []
    codes: list[str] = []
    for streaming in (False, True):
        request = chat_request(alias)
        try:
            if streaming:
                async for chunk in stub.StreamChat(request, timeout=10, metadata=AUTH):
                    out.append(str(chunk))
            else:
                out.append(str(await stub.Chat(request, timeout=10, metadata=AUTH)))
            codes.append("OK")
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code().name)
            out += [exc.details() or "", str(exc.trailing_metadata()), exc.debug_error_string()]
    return out, codes


async def _http_outputs(session: aiohttp.ClientSession, root: str, alias: str) -> list[str]:
    out: list[str] = []
    for stream in (False, True):
        body = {"model": alias, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        async with session.post(f"{root}/v1/chat/completions", json=body) as response:
            assert response.status < 500 or response.status in (501, 502, 503, 504)
            out += [await response.text(), str(response.headers)]
    return out


@asynccontextmanager
async def _serving(raw: dict[str, Any]) -> AsyncIterator[tuple[SidecarProcess, list[str], str]]:
    """Both doors in-process, and a standalone bridge in front: (sidecar, roots, target)."""
    config = parse_config(raw, source="test", env={})
    sidecar = SidecarProcess(Engine(config), grpc_port=0, http_port=0)
    await sidecar.start()
    target = f"127.0.0.1:{sidecar.grpc_port}"
    remote = BridgeServer(RemoteBackend(target), port=0, settings=BridgeSettings(MASTER))
    try:
        await remote.start()
        roots = [f"http://127.0.0.1:{sidecar.http_port}", f"http://127.0.0.1:{remote.port}"]
        yield sidecar, roots, target
    finally:
        await remote.stop(grace=0)
        await sidecar.stop(grace=0)


async def test_no_secret_reaches_any_output(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    headers = {"Authorization": f"Bearer {MASTER}"}
    async with HostileUpstream() as hostile, aiohttp.ClientSession(headers=headers) as session:
        raw = _raw_config(hostile)
        # Calls first, with probes off, so that every call reaches the hostile upstream.
        calls = {**raw, "health": {**raw["health"], "probe_interval": 0}}
        codes: list[str] = []
        async with (
            _serving(calls) as (sidecar, roots, target),
            grpc.aio.insecure_channel(target) as channel,
        ):
            stub = pb_grpc.RouterStub(channel)
            for alias in sidecar.engine.config.groups:
                shown, ended = await _grpc_outputs(stub, alias)
                outputs += shown
                codes += ended
                for root in roots:
                    outputs += await _http_outputs(session, root, alias)
        assert "UNKNOWN" not in codes
        assert codes.count("OK") == 2  # the api_base + api_key deployment answers
        # Then probes, often: they survive the api_base + api_key combination and keep
        # going, and what they found shows on every status channel.
        async with _serving(raw) as (sidecar, roots, target):
            seen = len(hostile.requests)
            assert await wait_until(lambda: len(hostile.requests) > seen + 40, within=10)
            for root in roots:
                async with session.get(f"{root}/health") as response:
                    assert response.status == 200
                    outputs.append(await response.text())
            async with grpc.aio.insecure_channel(target) as channel:
                stub = pb_grpc.RouterStub(channel)
                models = await stub.ListModels(pb.ListModelsRequest(), timeout=5, metadata=AUTH)
            outputs.append(str(models))
            assert any(d.health.last_error for m in models.models for d in m.deployments)
            outputs.append(await fetch_status(target, MASTER))
            async with StandIns(sidecar.engine.config, "never") as standins:
                outputs.append(banner(sidecar, standins))

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    assert main(["check-config", str(config_file)]) == 0
    broken = tmp_path / "broken.yaml"
    raw["model_list"][0]["litellm_params"]["api_base"] = f"http://user:{PASSWORD}@h:port"
    broken.write_text(yaml.safe_dump(raw))
    assert main(["check-config", str(broken)]) == 2
    printed = capsys.readouterr()
    outputs += [printed.out, printed.err]
    assert "broken.yaml" in printed.err
    outputs += [caplog.text, *(r.getMessage() for r in caplog.records)]

    assert len(outputs) > 100
    leaks = [(secret, text[:300]) for text in outputs for secret in FORBIDDEN if secret in text]
    assert leaks == []
    # The calls did reach the upstream and failed there, in the project's words.
    joined = "\n".join(outputs)
    for words in (
        "the upstream's reply is not valid HTTP",
        "upstream answered HTTP 401",
        "cannot connect: connection refused",
        "upstream error mid-stream",
        "malformed SSE event",
        "[redacted]",
    ):
        assert words in joined
