"""The Ollama-compatible door end to end, driven by the official `ollama` client.

Any Ollama client reaches the router's aliases: one served by a local Ollama, one by
a cloud OpenAI-compatible deployment (cross-protocol, tools included), fallbacks,
embeddings, the listings; privacy holds through this door too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import ollama
import orjson
import pytest

from sidecar.cli.serve import SidecarProcess
from sidecar.config import SidecarConfig
from sidecar.engine import Engine
from sidecar.errors import ConfigError
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator
from sidecar.simulate.embedding import vector_for
from tests.bridge_harness import EXPECTED, KEY
from tests.harness import UPSTREAM_KEY, make_config

SSN_TEXT = "My SSN is 123-45-6789, please update my file."
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
async def local() -> AsyncIterator[OllamaSimulator]:
    async with OllamaSimulator() as sim:
        yield sim


@pytest.fixture
async def cloud() -> AsyncIterator[OpenAISimulator]:
    async with OpenAISimulator(api_key=UPSTREAM_KEY) as sim:
        yield sim


def door_config(local: OllamaSimulator, cloud: OpenAISimulator, **sections: Any) -> SidecarConfig:
    cloud_params = {
        "api_base": cloud.base_url,
        "api_key": UPSTREAM_KEY,
        "model_info": {"locality": "cloud", "description": "cloud answers"},
    }
    sections.setdefault("general_settings", {"master_key": KEY})
    sections.setdefault("timeouts", {"first_token": 5, "idle": 5, "total": 20})
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": local.base_url}),
            ("cloud-fast", "openai/gpt-4o-mini", cloud_params),
            ("embed-local", "ollama/nomic-embed-text", {"api_base": local.base_url}),
        ],
        litellm_settings={"fallbacks": [{"fast-local": ["cloud-fast"]}]},
        **sections,
    )


@asynccontextmanager
async def ollama_door(config: SidecarConfig) -> AsyncIterator[tuple[SidecarProcess, str]]:
    sidecar = SidecarProcess(Engine(config), grpc_port=0, ollama_port=0)
    await sidecar.start()
    try:
        yield sidecar, f"http://127.0.0.1:{sidecar.ollama_port}"
    finally:
        await sidecar.stop(grace=0)


@asynccontextmanager
async def client(url: str, key: str | None = KEY) -> AsyncIterator[ollama.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    sdk = ollama.AsyncClient(host=url, headers=headers)
    try:
        yield sdk
    finally:
        await cast(Any, sdk).close()


async def test_chat_streamed_and_whole(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    async with ollama_door(door_config(local, cloud)) as (_, url), client(url) as sdk:
        parts = []
        last: Any = None
        async for part in await sdk.chat(
            model="fast-local", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            parts.append(part.message.content or "")
            last = part
        assert "".join(parts) == EXPECTED
        assert last.done
        assert last.done_reason == "stop"
        assert last.eval_count == 20
        assert last.prompt_eval_count
        assert last.total_duration
        assert last.total_duration >= (last.eval_duration or 0)
        assert last.model == "fast-local"
        whole = await sdk.chat(
            model="fast-local:latest",
            messages=[{"role": "user", "content": "hi"}],
            options={"num_predict": 5},
        )
        assert whole.message.content == EXPECTED[: len("tok0 tok1 tok2 tok3 tok4 ")]
        assert whole.done_reason == "length"
        assert whole.model == "fast-local:latest"
    assert cloud.stats.requests == 0


async def test_ndjson_lines_exactly_as_ollama_writes_them(
    local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with (
        ollama_door(door_config(local, cloud)) as (_, url),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http,
    ):
        body = {"model": "fast-local", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{url}/api/chat", json=body) as response:
            assert response.status == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            assert response.headers["x-sidecar-deployment"] == "fast-local/0"
            raw = await response.read()
    assert raw.endswith(b"\n")
    lines = [orjson.loads(line) for line in raw.splitlines()]
    for line in lines[:-1]:
        assert set(line) == {"model", "created_at", "message", "done"}
        assert line["done"] is False
        assert line["message"]["role"] == "assistant"
    final = lines[-1]
    assert final["done"] is True
    assert final["message"] == {"role": "assistant", "content": ""}
    for key in ("done_reason", "total_duration", "load_duration", "prompt_eval_count"):
        assert key in final
    assert final["eval_count"] == 20
    assert all(isinstance(final[k], int) for k in ("total_duration", "eval_duration"))


async def test_alias_served_by_a_cloud_openai_deployment_with_tools(
    local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with ollama_door(door_config(local, cloud)) as (_, url), client(url) as sdk:
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        answer = await sdk.chat(model="cloud-fast", messages=messages, tools=[WEATHER_TOOL])
        calls = answer.message.tool_calls or []
        assert len(calls) == 1
        assert calls[0].function.name == "get_weather"
        assert isinstance(calls[0].function.arguments, dict)
        assert answer.done_reason == "stop"
        # The tool loop goes on in Ollama's shape: the result names the tool, not the call.
        messages.append(answer.message)
        messages.append({"role": "tool", "content": "sunny", "tool_name": "get_weather"})
        streamed = [
            part
            async for part in await sdk.chat(
                model="cloud-fast", messages=messages, tools=[WEATHER_TOOL], stream=True
            )
        ]
        assert streamed[-1].done
        sent = cloud.stats.bodies[-1]["messages"]
        assert sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"]
    assert cloud.stats.requests == 2
    assert local.stats.requests == 0


async def test_generate_embed_and_fallback(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    async with ollama_door(door_config(local, cloud)) as (_, url), client(url) as sdk:
        generated = await sdk.generate(model="fast-local", prompt="hi", system="be brief")
        assert generated.response == EXPECTED
        assert generated.done
        assert local.stats.bodies[-1]["messages"][0] == {"role": "system", "content": "be brief"}
        pieces = [
            p.response or ""
            async for p in await sdk.generate(model="fast-local", prompt="x", stream=True)
        ]
        assert "".join(pieces) == EXPECTED
        raw = await sdk.generate(model="fast-local", prompt="[INST] hi [/INST]", raw=True)
        assert raw.response == EXPECTED
        assert local.stats.bodies[-1]["raw"] is True
        assert local.stats.bodies[-1]["prompt"] == "[INST] hi [/INST]"
        loaded = await sdk.generate(model="fast-local")  # an empty prompt loads the model
        assert loaded.done_reason == "load"
        embedded = await sdk.embed(model="embed-local", input=["a", "b"], dimensions=32)
        assert len(embedded.embeddings) == 2
        assert all(
            abs(x - y) < 1e-9
            for x, y in zip(embedded.embeddings[1], vector_for("b", 32), strict=True)
        )
        legacy = await sdk.embeddings(model="embed-local", prompt="a")
        assert len(legacy.embedding) == 768
        # The local deployment fails: the alias falls back to the cloud one.
        local.fault = Fault("http_500")
        answer = await sdk.chat(model="fast-local", messages=[{"role": "user", "content": "hi"}])
        assert answer.message.content == EXPECTED
    assert cloud.stats.requests == 1


async def test_list_show_ps_version(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    async with ollama_door(door_config(local, cloud)) as (_, url), client(url) as sdk:
        listed = await sdk.list()
        names = [m.model for m in listed.models]
        # Every alias, the auto one included.
        assert set(names) == {
            "fast-local:latest",
            "cloud-fast:latest",
            "embed-local:latest",
            "auto:latest",
        }
        shown = await sdk.show("cloud-fast")
        assert "tools" in (shown.capabilities or [])
        assert shown.modelinfo is not None
        running = await sdk.ps()
        assert {m.model for m in running.models} == set(names)
        with pytest.raises(ollama.ResponseError) as err:
            await sdk.show("no-such-model")
        assert err.value.status_code == 404
        # Liveness and the version answer without a key, as tools probe them first.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/version") as response:
                assert (await response.json())["version"]
            async with http.get(f"{url}/") as response:
                assert await response.text() == "Ollama is running"


async def test_errors_in_ollamas_shape(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    async with ollama_door(door_config(local, cloud)) as (_, url):
        async with client(url, key=None) as anonymous:
            with pytest.raises(ollama.ResponseError) as err:
                await anonymous.list()
            assert err.value.status_code == 401
        async with client(url) as sdk:
            with pytest.raises(ollama.ResponseError) as err:
                await sdk.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
            assert err.value.status_code == 404
            assert "nope" in err.value.error
            with pytest.raises(ollama.ResponseError) as err:
                await sdk.chat(model="fast-local", messages=[{"role": "wizard", "content": "x"}])
            assert err.value.status_code == 400
            assert "messages[0].role" in err.value.error
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
            async with http.post(f"{url}/api/chat", data=b"{not json") as response:
                assert response.status == 400
                assert set(await response.json()) == {"error"}
            async with http.get(f"{url}/api/chat") as response:
                assert response.status == 405


async def test_privacy_through_the_ollama_door(
    local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with ollama_door(door_config(local, cloud)) as (_, url), client(url) as sdk:
        for call in (
            sdk.chat(model="cloud-fast", messages=[{"role": "user", "content": SSN_TEXT}]),
            sdk.generate(model="cloud-fast", prompt=SSN_TEXT),
        ):
            with pytest.raises(ollama.ResponseError) as err:
                await call
            assert err.value.status_code == 400
            assert "privacy" in err.value.error
        with pytest.raises(ollama.ResponseError) as err:
            await sdk.embed(model="cloud-fast", input=["fine", SSN_TEXT])
        assert "privacy" in err.value.error
        await local.set_fault(Fault("refuse"))
        with pytest.raises(ollama.ResponseError):
            await sdk.chat(model="fast-local", messages=[{"role": "user", "content": SSN_TEXT}])
    assert cloud.stats.requests == 0
    assert cloud.stats.embed_requests == 0


async def test_config_key_opens_the_door(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    config = door_config(local, cloud, front_doors={"ollama_port": 11434})
    assert config.front_doors.ollama_port == 11434
    assert door_config(local, cloud).front_doors.ollama_port is None
    for bad in (70000, -1, "11434x"):
        with pytest.raises(ConfigError, match=r"front_doors\.ollama_port"):
            door_config(local, cloud, front_doors={"ollama_port": bad})
    # An unknown key warns, as everywhere in the configuration.
    typo = door_config(local, cloud, front_doors={"ollama_prot": 1})
    assert "front_doors: unknown key 'ollama_prot' ignored" in typo.warnings


async def test_a_stream_that_breaks_ends_with_an_error_line(
    local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    local.fault = Fault("error_line", after_tokens=3)
    async with (
        ollama_door(door_config(local, cloud)) as (_, url),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http,
    ):
        hello = {"role": "user", "content": "hi"}
        body = {"model": "fast-local", "messages": [hello]}
        async with http.post(f"{url}/api/chat", json=body) as response:
            assert response.status == 200
            lines = [orjson.loads(line) for line in (await response.read()).splitlines()]
        async with client(url) as sdk:
            with pytest.raises(ollama.ResponseError):
                async for _ in await sdk.chat(model="fast-local", messages=[hello], stream=True):
                    pass
    # (Tokens already buffered together may come in one line.)
    assert "".join(line["message"]["content"] for line in lines[:-1]) == "tok0 tok1 tok2 "
    assert set(lines[-1]) == {"error"}
    assert "simulated failure" in lines[-1]["error"]
    # Tokens had gone out: no silent switch to the cloud fallback.
    assert cloud.stats.requests == 0
