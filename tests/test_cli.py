"""The `llm-sidecar` command line, run as a real process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import orjson
import pytest

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "litellm_config.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_check_config_prints_the_model_table() -> None:
    result = run_cli("check-config", str(SEED))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for alias in ("fast-local", "strong-local", "code-local", "cloud-strong", "cloud-fast"):
        assert alias in out
    assert re.search(r"cloud-strong/0\s+openai\s+gpt-4o\s+cloud", out)
    assert re.search(r"fast-local/0\s+ollama\s+llama3.2:8b\s+local\s+http://ollama:11434", out)
    assert "sk-your-proxy-master-key" not in out


def test_check_config_prints_each_warning_once() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = run_cli("check-config", str(SEED), env=env)
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    warning = "model_list[3].litellm_params.api_key: environment variable OPENAI_API_KEY is not set"
    assert both.count(warning) == 1


def test_check_config_reports_errors_with_key_paths(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "model_list:\n"
        "  - model_name: a\n"
        "    litellm_params: {max_tokens: lots}\n"
        "router_settings: {routing_strategy: fastest}\n"
    )
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2
    assert "model_list[0].litellm_params.model: required" in result.stderr
    assert "model_list[0].litellm_params.max_tokens: expected an integer" in result.stderr
    assert "router_settings.routing_strategy" in result.stderr


def test_check_config_reports_routing_rule_errors(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text(
        "model_list:\n"
        "  - model_name: a\n"
        "    litellm_params: {model: ollama/llama3.2}\n"
        "routing_rules: {tasks: {summarise: nowhere}}\n"
    )
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2
    assert "routing_rules.tasks.summarise" in result.stderr
    assert "nowhere" in result.stderr


def test_route_explains_a_plan(tmp_path: Path) -> None:
    code = "Fix this:\n```python\ndef f(x):\n    return x +\n```"
    result = run_cli("route", "--config", str(SEED), "--prompt", code)
    assert result.returncode == 0, result.stderr
    assert "code-local/0" in result.stdout
    assert "auto:" in result.stdout
    messages = tmp_path / "messages.json"
    messages.write_bytes(
        orjson.dumps([{"role": "user", "content": "My SSN is 123-45-6789, help me"}])
    )
    result = run_cli("route", "--config", str(SEED), "--messages-file", str(messages))
    assert result.returncode == 0, result.stderr
    assert "sensitive: yes" in result.stdout
    assert "cloud" not in result.stdout.split("candidates")[1].split("notes")[0]
    result = run_cli("route", "--config", str(SEED), "--model", "nope", "--prompt", "hi")
    assert result.returncode == 1
    assert "unknown model 'nope'" in result.stderr


async def test_serve_with_simulated_backends_answers_and_drains(tmp_path: Path) -> None:
    # What `make run` does, on a machine with no Ollama and no API keys (and its spend
    # ledger in the test's own directory).
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        "--config",
        str(SEED),
        "--grpc-port",
        "0",
        "--no-http",
        "--simulate",
        "auto",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "LLM_SIDECAR_DATA_DIR": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        banner = ""
        address = None
        async with asyncio.timeout(30):
            while address is None:
                line = (await process.stdout.readline()).decode()
                assert line, "serve exited early:\n" + banner
                banner += line
                match = re.search(r"serving gRPC on (\S+)", line)
                address = match.group(1) if match else None
            while "SIMULATED BACKENDS" not in banner:
                banner += (await process.stdout.readline()).decode()
        # The seed config has a master key, and the gRPC door wants it too.
        key = (("authorization", "Bearer sk-your-proxy-master-key"),)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.RouterStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListModels(pb.ListModelsRequest(), timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            models = await stub.ListModels(pb.ListModelsRequest(), timeout=5, metadata=key)
            assert models.simulated
            assert all(d.simulated for m in models.models for d in m.deployments)
            request = pb.ChatRequest(
                model="fast-local", messages=[pb.Message(role="user", content="hello")]
            )
            chunks = [c async for c in stub.StreamChat(request, timeout=10, metadata=key)]
            assert "".join(c.delta for c in chunks).split()[0] == "tok0"
            assert chunks[0].route.deployment == "fast-local/0"
        status = await asyncio.to_thread(
            run_cli, "status", "--sidecar", address, "--config", str(SEED)
        )
        assert status.returncode == 0, status.stderr
        assert "SERVING" in status.stdout
        assert re.search(r"fast-local\s+fast-local/0\s+local\s+up", status.stdout)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_simulate_command_serves_ollama() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "simulate",
        "ollama",
        "--port",
        "0",
        "--profile",
        "instant",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"on (http://\S+)", line)
        assert match, line
        reader, writer = await asyncio.open_connection(*match.group(1)[7:].split(":"))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert b"Ollama is running" in reply
    finally:
        process.terminate()
        await process.wait()


def test_status_of_an_absent_sidecar_is_a_clear_error() -> None:
    result = run_cli("status", "--sidecar", "127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the sidecar at 127.0.0.1:9" in result.stderr
