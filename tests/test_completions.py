"""Legacy text completions end to end with the `openai` SDK's `completions.create`, in
both bridge modes: served natively by an OpenAI-compatible deployment (/completions)
and by Ollama (/api/generate, raw), and as a chat turn by Anthropic, which says so
in `x-sidecar-translated: chat`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest

from bridge.completions import TextStreamWriter
from sidecar.config import SidecarConfig
from sidecar.simulate import AnthropicSimulator, OllamaSimulator, OpenAISimulator, profile_by_name
from sidecar.types import Chunk, Usage
from tests.bridge_harness import EXPECTED, KEY, MODES, running_bridge
from tests.harness import UPSTREAM_KEY, make_config

CLAUDE_KEY = "sk-ant-test"


@pytest.fixture
async def local() -> AsyncIterator[OllamaSimulator]:
    async with OllamaSimulator() as sim:
        yield sim


@pytest.fixture
async def vllm() -> AsyncIterator[OpenAISimulator]:
    async with OpenAISimulator(api_key=UPSTREAM_KEY) as sim:
        yield sim


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicSimulator]:
    async with AnthropicSimulator(profile=profile_by_name("instant"), api_key=CLAUDE_KEY) as sim:
        yield sim


def config(
    local: OllamaSimulator, vllm: OpenAISimulator, claude: AnthropicSimulator
) -> SidecarConfig:
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": local.base_url}),
            ("vllm-local", "openai/qwen2.5", {"api_base": vllm.base_url, "api_key": UPSTREAM_KEY}),
            (
                "claude",
                "claude-haiku-4-5",
                {
                    "api_base": claude.base_url,
                    "api_key": CLAUDE_KEY,
                    "max_tokens": 64,
                    "model_info": {"locality": "cloud"},
                },
            ),
        ],
        general_settings={"master_key": KEY},
        timeouts={"first_token": 5, "idle": 5, "total": 20},
    )


@pytest.mark.parametrize("mode", MODES)
async def test_native_completions_whole_and_streamed(
    mode: str, local: OllamaSimulator, vllm: OpenAISimulator, claude: AnthropicSimulator
) -> None:
    async with (
        running_bridge(config(local, vllm, claude), mode) as bridge,
        bridge.client() as client,
    ):
        raw = await client.completions.with_raw_response.create(
            model="vllm-local", prompt="Once upon a time", max_tokens=50, stop=["\n\n"]
        )
        assert "x-sidecar-translated" not in raw.headers
        whole = raw.parse()
        assert whole.object == "text_completion"
        assert whole.choices[0].text == EXPECTED
        assert whole.choices[0].finish_reason == "stop"
        assert whole.usage is not None
        assert whole.usage.completion_tokens == 20
        sent = vllm.stats.bodies[-1]
        assert sent["prompt"] == "Once upon a time"
        assert "messages" not in sent
        assert sent["max_tokens"] == 50
        assert sent["stop"] == ["\n\n"]
        texts = []
        finish = None
        usage: Any = None
        async for part in await client.completions.create(
            model="fast-local",
            prompt="Once",
            stream=True,
            max_tokens=5,
            stream_options={"include_usage": True},
        ):
            for choice in part.choices:
                texts.append(choice.text)
                finish = choice.finish_reason or finish
            usage = part.usage or usage
        assert "".join(texts) == "tok0 tok1 tok2 tok3 tok4 "
        assert finish == "length"
        assert usage.completion_tokens == 5
        native = local.stats.bodies[-1]
        assert native["prompt"] == "Once"
        assert native["raw"] is True


@pytest.mark.parametrize("mode", MODES)
async def test_translated_to_a_chat_turn_where_no_completions_endpoint(
    mode: str, local: OllamaSimulator, vllm: OpenAISimulator, claude: AnthropicSimulator
) -> None:
    async with (
        running_bridge(config(local, vllm, claude), mode) as bridge,
        bridge.client() as client,
    ):
        raw = await client.completions.with_raw_response.create(model="claude", prompt="Hi")
        assert raw.headers["x-sidecar-translated"] == "chat"
        assert raw.parse().choices[0].text
        # The endpoint's default length holds whoever answers it.
        assert claude.stats.bodies[-1]["max_tokens"] == 16
        assert claude.stats.bodies[-1]["messages"][0]["content"] in (
            "Hi",
            [{"type": "text", "text": "Hi"}],
        )
        stream = await client.completions.with_raw_response.create(
            model="claude", prompt="Hi", stream=True
        )
        assert stream.headers["x-sidecar-translated"] == "chat"
        text = "".join([c.choices[0].text async for c in stream.parse() if c.choices])
        assert text


@pytest.mark.parametrize("mode", MODES)
async def test_prompt_lists_and_refusals(
    mode: str, local: OllamaSimulator, vllm: OpenAISimulator, claude: AnthropicSimulator
) -> None:
    async with (
        running_bridge(config(local, vllm, claude), mode) as bridge,
        bridge.client() as client,
    ):
        batch = await client.completions.create(
            model="vllm-local", prompt=["a", "b", "c"], max_tokens=64
        )
        assert [c.index for c in batch.choices] == [0, 1, 2]
        assert all(c.text == EXPECTED for c in batch.choices)
        # With no max_tokens, OpenAI's default for this endpoint: 16.
        short = await client.completions.create(model="vllm-local", prompt="a")
        assert vllm.stats.bodies[-1]["max_tokens"] == 16
        assert short.choices[0].finish_reason == "length"
        streamed: dict[int, str] = {}
        async for part in await client.completions.create(
            model="fast-local", prompt=["a", "b"], stream=True, max_tokens=2
        ):
            for choice in part.choices:
                streamed[choice.index] = streamed.get(choice.index, "") + choice.text
        assert streamed == {0: "tok0 tok1 ", 1: "tok0 tok1 "}
        for fields, param in (
            ({"echo": True}, "echo"),
            ({"suffix": "end"}, "suffix"),
            ({"logprobs": 2}, "logprobs"),
            ({"n": 2}, "n"),
            ({"best_of": 3}, "best_of"),
        ):
            with pytest.raises(openai.BadRequestError) as err:
                await client.completions.create(model="vllm-local", prompt="x", **fields)
            assert isinstance(err.value.body, dict)
            assert err.value.body.get("param") == param
        with pytest.raises(openai.BadRequestError, match="token ids"):
            await client.completions.create(model="vllm-local", prompt=[1, 2, 3])
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="nope", prompt="x")


@pytest.mark.parametrize("mode", MODES)
async def test_a_sensitive_prompt_reaches_no_cloud(
    mode: str, local: OllamaSimulator, vllm: OpenAISimulator, claude: AnthropicSimulator
) -> None:
    async with (
        running_bridge(config(local, vllm, claude), mode) as bridge,
        bridge.client() as client,
    ):
        with pytest.raises(openai.BadRequestError, match="privacy"):
            await client.completions.create(
                model="claude", prompt="My SSN is 123-45-6789, please update my file."
            )
        with pytest.raises(openai.BadRequestError, match="privacy"):
            await client.completions.create(
                model="claude", prompt=["Card: 4111 1111 1111 1111 exp 12/27"], stream=True
            )
        assert claude.stats.requests == 0
        # In a list, each prompt is judged alone: the harmless one may go, the card never.
        with pytest.raises(openai.BadRequestError, match="privacy"):
            await client.completions.create(
                model="claude", prompt=["harmless", "Card: 4111 1111 1111 1111 exp 12/27"]
            )
    assert all("4111" not in orjson.dumps(body).decode() for body in claude.stats.bodies)


def test_the_stream_writer_frames_are_openais() -> None:
    writer = TextStreamWriter("cmpl-1", 7, "m", include_usage=True)
    raw = writer.chunk(Chunk('say "hi"\n'), 0)
    raw += writer.chunk(Chunk("", finish_reason="length", usage=Usage(3, 2)), 0)
    raw += writer.end()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    frames = [orjson.loads(e) for e in events[:-1]]
    assert frames[0] == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 7,
        "model": "m",
        "choices": [{"text": 'say "hi"\n', "index": 0, "logprobs": None, "finish_reason": None}],
        "usage": None,
    }
    assert frames[1]["choices"][0]["finish_reason"] == "length"
    assert frames[2]["choices"] == []
    assert frames[2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
