"""The commands as an operator runs them: `llm-sidecar serve` with its HTTP port, and
`llm-sidecar bridge` in front of it, each in its own process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import ollama
import openai
import pytest

from sidecar.cli.main import build_parser
from tests.bridge_harness import KEY, USER

READY_TIMEOUT = 20.0
CONFIG = f"""
model_list:
  - model_name: fast-local
    litellm_params:
      model: ollama/llama3.2:8b
      api_base: http://127.0.0.1:9
general_settings:
  master_key: {KEY}
"""


@asynccontextmanager
async def command(*args: str, ready: str) -> AsyncIterator[tuple[re.Match[str], list[str]]]:
    """Run `llm-sidecar ARGS`, yield once stdout matches `ready`; SIGTERM it at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        match = await asyncio.wait_for(_wait_for(process.stdout, ready, lines), READY_TIMEOUT)
        yield match, lines
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), READY_TIMEOUT)
        lines += rest.decode().splitlines()
        assert process.returncode == 0, "\n".join(lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _wait_for(stream: asyncio.StreamReader, ready: str, lines: list[str]) -> re.Match[str]:
    pattern = re.compile(ready)
    while line := (await stream.readline()).decode():
        lines.append(line.rstrip("\n"))
        match = pattern.search(line)
        if match:
            return match
    raise AssertionError("exited before it was ready:\n" + "\n".join(lines))


async def chat_through(base_url: str) -> tuple[str, str]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="fast-local", messages=USER, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    return text, raw.headers["x-sidecar-deployment"]


async def test_serve_and_bridge_commands(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    serve_args = ["serve", "--config", str(config), "--simulate", "always"]
    serve_args += ["--grpc-port", "0", "--http-port", "0", "--drain-seconds", "2"]
    async with command(*serve_args, ready=r"serving HTTP on (http://\S+)") as (http, lines):
        grpc_port = re.search(r"serving gRPC on \S+:(\d+)", "\n".join(lines))
        assert grpc_port is not None
        assert "master key required" in lines[-1]
        text, deployment = await chat_through(http.group(1) + "/v1")
        assert text.startswith("tok0 tok1 ")
        assert deployment == "fast-local/0"
        bridge_args = ["bridge", "--sidecar", f"127.0.0.1:{grpc_port.group(1)}"]
        bridge_args += ["--http-port", "0", "--config", str(config), "--drain-seconds", "2"]
        async with command(*bridge_args, ready=r"serving HTTP on (http://\S+)") as (remote, out):
            text, deployment = await chat_through(remote.group(1) + "/v1")
            assert text.startswith("tok0 tok1 ")
            assert deployment == "fast-local/0"
        assert not any(KEY in line for line in out)
    assert not any(KEY in line for line in lines)


def test_http_flags() -> None:
    parser = build_parser()
    serve = parser.parse_args(["serve", "--config", "c.yaml"])
    assert (serve.http_port, serve.no_http, serve.max_request_mb) == (4000, False, 8.0)
    assert parser.parse_args(["serve", "--config", "c", "--no-http"]).no_http
    bridge = parser.parse_args(["bridge", "--sidecar", "h:1", "--master-key", "k"])
    assert (bridge.sidecar, bridge.http_port, bridge.master_key) == ("h:1", 4000, "k")
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--config", "c", "--max-request-mb", "0"])


async def test_the_ollama_door_in_serve_and_in_the_standalone_bridge(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    ollama_ready = r"serving Ollama's API on (http://\S+)"
    serve_args = ["serve", "--config", str(config), "--simulate", "always", "--no-http"]
    serve_args += ["--grpc-port", "0", "--ollama-port", "0", "--drain-seconds", "2"]
    async with command(*serve_args, ready=ollama_ready) as (door, lines):
        grpc_port = re.search(r"serving gRPC on \S+:(\d+)", "\n".join(lines))
        assert grpc_port is not None
        assert await ollama_chat(door.group(1)) == "fast-local/0"
        bridge_args = ["bridge", "--sidecar", f"127.0.0.1:{grpc_port.group(1)}", "--config"]
        bridge_args += [str(config), "--http-port", "0", "--ollama-port", "0"]
        async with command(*bridge_args, "--drain-seconds", "2", ready=ollama_ready) as (
            remote,
            _,
        ):
            assert await ollama_chat(remote.group(1)) == "fast-local/0"


async def ollama_chat(url: str) -> str:
    """A streamed chat through an Ollama door with the `ollama` client; the deployment."""
    sdk = ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {KEY}"})
    try:
        parts = [
            part.message.content or ""
            async for part in await sdk.chat(model="fast-local", messages=USER, stream=True)
        ]
        assert "".join(parts).startswith("tok0 tok1 ")
        listed = await sdk.list()
        assert "fast-local:latest" in {m.model for m in listed.models}
    finally:
        await cast(Any, sdk).close()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
        body = {"model": "fast-local", "messages": USER, "stream": False}
        async with http.post(f"{url}/api/chat", json=body) as response:
            return response.headers["x-sidecar-deployment"]
