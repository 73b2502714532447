"""Embeddings end to end: the `openai` and `ollama` clients, the bridge in both modes, the
Embed RPC, over real sockets to the simulators.

What must hold: vectors in the inputs' order from one upstream call per batch, float and
base64 answers, `dimensions`, token-id input, usage; fallbacks on a failing deployment;
a sensitive text embedded locally or not at all (the cloud simulator sees nothing);
a deployment that cannot embed says so.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from sidecar.config import SidecarConfig
from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator
from sidecar.simulate.embedding import vector_for
from sidecar.types import SpendQuery
from tests.bridge_harness import KEY, MODES, running_bridge
from tests.harness import UPSTREAM_KEY, make_config, running_sidecar
from tests.test_budget_e2e import eventually
from tests.test_simulate_fidelity import open_ollama

SSN_TEXT = "My SSN is 123-45-6789, please update my file."
_CLOUD = {"locality": "cloud"}


@pytest.fixture
async def local() -> AsyncIterator[OllamaSimulator]:
    async with OllamaSimulator() as sim:
        yield sim


@pytest.fixture
async def cloud() -> AsyncIterator[OpenAISimulator]:
    async with OpenAISimulator(api_key=UPSTREAM_KEY) as sim:
        yield sim


def embed_config(local: OllamaSimulator, cloud: OpenAISimulator) -> SidecarConfig:
    cloud_params = {"api_base": cloud.base_url, "api_key": UPSTREAM_KEY, "model_info": _CLOUD}
    local_openai = {"api_base": cloud.base_url, "api_key": UPSTREAM_KEY}
    return make_config(
        [
            ("embed-local", "ollama/nomic-embed-text", {"api_base": local.base_url}),
            ("embed-cloud", "openai/text-embedding-3-small", cloud_params),
            ("embed-vllm", "openai/bge-m3", local_openai),
            # One group of both kinds: the plan decides, the egress enforces privacy.
            ("embed", "ollama/nomic-embed-text", {"api_base": local.base_url}),
            ("embed", "openai/text-embedding-3-small", cloud_params),
            ("embed-claude", "anthropic/claude-haiku-4-5", {"api_key": "sk-ant"}),
        ],
        general_settings={"master_key": KEY},
        router_settings={"routing_strategy": "simple-shuffle"},
        litellm_settings={"fallbacks": [{"embed-local": ["embed-cloud"]}]},
        health={"probe_interval": 0, "failure_threshold": 1},
    )


def close_to(got: list[float], want: list[float]) -> bool:
    """Equal up to float32 rounding (base64 and the gRPC contract carry float32)."""
    return len(got) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("mode", MODES)
async def test_openai_client_float_and_base64(
    mode: str, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with (
        running_bridge(embed_config(local, cloud), mode) as bridge,
        bridge.client() as client,
    ):
        texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
        # The SDK asks for base64 by default and decodes it.
        default = await client.embeddings.create(model="embed-local", input=texts)
        assert [d.index for d in default.data] == [0, 1, 2, 3, 4]
        for item, text in zip(default.data, texts, strict=True):
            assert close_to(item.embedding, vector_for(text, 768))
        assert default.usage.prompt_tokens > 0
        assert default.usage.total_tokens == default.usage.prompt_tokens
        floats = await client.embeddings.create(
            model="embed-local", input="alpha", encoding_format="float", dimensions=64
        )
        assert len(floats.data) == 1
        assert close_to(floats.data[0].embedding, vector_for("alpha", 64))
    # One upstream call per batch: the five texts went up together.
    assert local.stats.embed_requests == 2
    assert cloud.stats.embed_requests == 0


@pytest.mark.parametrize("mode", MODES)
async def test_base64_wire_format_and_route_headers(
    mode: str, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with (
        running_bridge(embed_config(local, cloud), mode) as bridge,
        bridge.client() as client,
    ):
        raw = await client.embeddings.with_raw_response.create(
            model="embed-local", input=["x y z"], encoding_format="base64", dimensions=8
        )
        assert raw.headers["x-sidecar-deployment"] == "embed-local/0"
        assert raw.headers["x-sidecar-locality"] == "local"
        body: dict[str, Any] = raw.http_response.json()
        packed = base64.b64decode(body["data"][0]["embedding"])
        assert close_to(list(struct.unpack("<8f", packed)), vector_for("x y z", 8))
        assert body["object"] == "list"
        assert body["model"] == "embed-local"


@pytest.mark.parametrize("mode", MODES)
async def test_token_ids_stay_local(
    mode: str, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with (
        running_bridge(embed_config(local, cloud), mode) as bridge,
        bridge.client() as client,
    ):
        # A local OpenAI-compatible server takes token ids as they are.
        answer = await client.embeddings.create(
            model="embed-vllm", input=[[1, 2, 3], [4, 5]], encoding_format="float"
        )
        assert close_to(answer.data[1].embedding, vector_for([4, 5], 1536))
        assert cloud.stats.bodies[-1]["input"] == [[1, 2, 3], [4, 5]]
        before = cloud.stats.embed_requests
        # The privacy detector cannot read token ids, so the cloud never gets them.
        with pytest.raises(openai.BadRequestError, match="privacy"):
            await client.embeddings.create(model="embed-cloud", input=[9, 8, 7])
        # Ollama embeds text only: a clear refusal, not a crash.
        with pytest.raises(openai.APIStatusError, match="text, not token ids"):
            await client.embeddings.create(model="embed-local", input=[9, 8, 7])
        assert cloud.stats.embed_requests == before


@pytest.mark.parametrize("mode", MODES)
async def test_sensitive_text_never_reaches_the_cloud(
    mode: str, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with (
        running_bridge(embed_config(local, cloud), mode) as bridge,
        bridge.client() as client,
    ):
        # One sensitive text makes the whole batch local, whatever the shuffle picks.
        for _ in range(6):
            raw = await client.embeddings.with_raw_response.create(
                model="embed", input=["harmless", SSN_TEXT]
            )
            assert raw.headers["x-sidecar-locality"] == "local"
        with pytest.raises(openai.BadRequestError, match="privacy"):
            await client.embeddings.create(model="embed-cloud", input=[SSN_TEXT])
        # The local deployment down and a cloud fallback configured: still not the cloud.
        await local.set_fault(Fault("refuse"))
        with pytest.raises(openai.APIStatusError) as err:
            await client.embeddings.create(model="embed-local", input=[SSN_TEXT])
        assert "privacy" in err.value.message
    assert cloud.stats.embed_requests == 0
    assert cloud.stats.requests == 0


@pytest.mark.parametrize("mode", MODES)
async def test_falls_back_when_a_deployment_fails(
    mode: str, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    local.fault = Fault("http_500")
    async with (
        running_bridge(embed_config(local, cloud), mode) as bridge,
        bridge.client() as client,
    ):
        raw = await client.embeddings.with_raw_response.create(
            model="embed-local", input=["one", "two"], encoding_format="float"
        )
        assert raw.headers["x-sidecar-deployment"] == "embed-cloud/0"
        assert raw.headers["x-sidecar-attempts"] == "2"
        answer = raw.parse()
        assert close_to(answer.data[1].embedding, vector_for("two", 1536))
    assert local.stats.embed_requests >= 1
    assert cloud.stats.embed_requests == 1


@pytest.mark.parametrize("mode", MODES)
async def test_bad_input_is_named(
    mode: str, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    async with (
        running_bridge(embed_config(local, cloud), mode) as bridge,
        bridge.client() as client,
    ):
        cases: list[tuple[dict[str, Any], str]] = [
            ({"input": ""}, "input"),
            ({"input": []}, "input"),
            ({"input": ["ok", 3]}, "input[1]"),
            ({"input": [[1, -2]]}, "input[0]"),
            ({"input": "ok", "dimensions": 0}, "dimensions"),
            ({"input": "ok", "encoding_format": "int8"}, "encoding_format"),
        ]
        for fields, param in cases:
            with pytest.raises(openai.BadRequestError) as err:
                await client.embeddings.create(model="embed-local", **fields)
            assert isinstance(err.value.body, dict)
            assert err.value.body.get("param") == param, (fields, err.value.body)
        with pytest.raises(openai.NotFoundError):
            await client.embeddings.create(model="no-such-alias", input="x")
        with pytest.raises(openai.BadRequestError, match="embedding model"):
            await client.embeddings.create(model="auto", input="x")
        with pytest.raises(openai.APIStatusError, match="no embeddings"):
            await client.embeddings.create(model="embed-claude", input="x")
    assert local.stats.embed_requests == 0


async def test_embed_rpc(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    config = embed_config(local, cloud)
    config = make_config(
        [
            ("embed-local", "ollama/nomic-embed-text", {"api_base": local.base_url}),
            (
                "embed-cloud",
                "openai/text-embedding-3-small",
                {"api_base": cloud.base_url, "api_key": UPSTREAM_KEY, "model_info": _CLOUD},
            ),
        ]
    )
    async with running_sidecar(config) as sidecar:
        request = pb.EmbedRequest(
            model="embed-local",
            inputs=[pb.EmbedInput(text="first"), pb.EmbedInput(text="second")],
            dimensions=16,
        )
        answer = await sidecar.stub.Embed(request, timeout=5)
        assert [len(e.values) for e in answer.embeddings] == [16, 16]
        assert close_to(list(answer.embeddings[1].values), vector_for("second", 16))
        assert answer.route.deployment == "embed-local/0"
        assert answer.usage.prompt_tokens_known
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Embed(
                pb.EmbedRequest(model="embed-cloud", inputs=[pb.EmbedInput(text=SSN_TEXT)]),
                timeout=5,
            )
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Embed(pb.EmbedRequest(model="embed-local"), timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "input" in (err.value.details() or "")
        raw = sidecar.channel.unary_unary(
            "/llmsidecar.v1.Router/Embed", response_deserializer=pb.EmbedResponse.FromString
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw(b"\x12\x04\x0a\x02\xc3\x28", timeout=5)  # input text not UTF-8
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "EmbedRequest" in (err.value.details() or "")
    assert cloud.stats.embed_requests == 0


async def test_simulators_speak_the_official_clients(
    local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    """The simulators' embeddings as the real servers answer them, read by the real clients."""
    async with open_ollama(local.base_url) as client:
        answer = await client.embed(model="nomic-embed-text", input=["a", "b"])
        legacy = await client.embeddings(model="nomic-embed-text", prompt="a")
    assert close_to(list(legacy.embedding), vector_for("a", 768))
    assert close_to(list(answer.embeddings[1]), vector_for("b", 768))
    assert answer.prompt_eval_count
    async with openai.AsyncOpenAI(
        base_url=cloud.base_url, api_key=UPSTREAM_KEY, max_retries=0
    ) as sdk:
        floats = await sdk.embeddings.create(
            model="text-embedding-3-small", input="hello", dimensions=32
        )
    assert close_to(floats.data[0].embedding, vector_for("hello", 32))


def priced_config(cloud: OpenAISimulator, max_budget: float) -> SidecarConfig:
    info = {"locality": "cloud", "input_cost_per_token": 0.001, "output_cost_per_token": 0.0}
    return make_config(
        [
            (
                "embed-cloud",
                "openai/text-embedding-3-small",
                {"api_base": cloud.base_url, "api_key": UPSTREAM_KEY, "model_info": info},
            )
        ],
        general_settings={"max_budget": max_budget},
    )


async def test_cloud_embeddings_are_charged_and_capped(cloud: OpenAISimulator) -> None:
    async with running_sidecar(priced_config(cloud, 1.0)) as sidecar:
        request = pb.EmbedRequest(
            model="embed-cloud", inputs=[pb.EmbedInput(text="x" * 40) for _ in range(3)]
        )
        answer = await sidecar.stub.Embed(request, timeout=5)
        tokens = answer.usage.prompt_tokens
        assert tokens == 30  # 40 characters are 10 tokens to the simulator
        engine = sidecar.engine

        async def charged() -> None:
            (status,) = await engine.budget_status()
            assert status.spent == pytest.approx(tokens * 0.001)
            assert status.reserved == 0
            report = await engine.spend(SpendQuery(model="embed-cloud"))
            assert len(report.rows) == 1
            row = report.rows[0]
            assert (row.prompt_tokens, row.locality, row.status) == (tokens, "cloud", "ok")
            assert row.cost == pytest.approx(tokens * 0.001)

        await eventually(charged)
    # A cap that cannot hold the batch's worst case: the cloud is never called.
    before = cloud.stats.embed_requests
    async with running_sidecar(priced_config(cloud, 0.001)) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Embed(request, timeout=5)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cloud.stats.embed_requests == before


async def test_langchain_openai_embeddings(local: OllamaSimulator, cloud: OpenAISimulator) -> None:
    """LangChain's OpenAIEmbeddings, the way RAG stacks use it, through the bridge."""
    async with (
        running_bridge(embed_config(local, cloud), "in-process") as bridge,
        openai.DefaultAsyncHttpxClient() as http,
    ):
        embedder = OpenAIEmbeddings(
            model="embed-local",
            base_url=bridge.base_url,
            api_key=SecretStr(KEY),
            # Its default sends tiktoken token ids (fetched from the network); text here.
            check_embedding_ctx_length=False,
            max_retries=0,
            http_async_client=http,
        )
        documents = await embedder.aembed_documents(["first doc", "second doc"])
        query = await embedder.aembed_query("first doc")
    assert close_to(documents[1], vector_for("second doc", 768))
    assert close_to(query, documents[0])
