"""Gemini embeddings end to end: the `openai` client through the bridge (both modes) to the
Gemini simulator's `:batchEmbedContents`, and the google-genai client against the simulator.

What must hold: one upstream call per batch, vectors in the inputs' order, `dimensions`
sent as `outputDimensionality`, the key in `x-goog-api-key`; a sensitive text never
reaches Gemini; token ids are refused by name rather than sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from google import genai
from google.genai import types as genai_types

from sidecar.config import SidecarConfig
from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import GeminiSimulator
from sidecar.simulate.embedding import vector_for
from tests.bridge_harness import KEY, MODES, running_bridge
from tests.harness import UPSTREAM_KEY, make_config, running_sidecar
from tests.test_budget_e2e import eventually

MODEL = "text-embedding-004"
SSN_TEXT = "My SSN is 123-45-6789, please update my file."


@pytest.fixture
async def gemini() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(api_key=UPSTREAM_KEY) as sim:
        yield sim


def _config(gemini: GeminiSimulator) -> SidecarConfig:
    info = {"locality": "cloud", "input_cost_per_token": 1e-7, "output_cost_per_token": 0.0}
    params = {"api_base": gemini.base_url, "api_key": UPSTREAM_KEY, "model_info": info}
    return make_config(
        [("embed-gemini", f"gemini/{MODEL}", params)],
        general_settings={"master_key": KEY, "max_budget": 100.0},
        health={"probe_interval": 0},
    )


def _close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("mode", MODES)
async def test_a_batch_is_one_call_in_order(mode: str, gemini: GeminiSimulator) -> None:
    async with running_bridge(_config(gemini), mode) as bridge, bridge.client() as client:
        texts = ["alpha", "beta", "gamma"]
        answer = await client.embeddings.create(
            model="embed-gemini", input=texts, encoding_format="float", dimensions=32
        )
        assert [item.index for item in answer.data] == [0, 1, 2]
        for item, text in zip(answer.data, texts, strict=True):
            assert _close(item.embedding, vector_for(text, 32))
    assert gemini.stats.embed_requests == 1


async def test_a_priced_batch_is_charged_the_estimate_gemini_cannot_report(
    gemini: GeminiSimulator,
) -> None:
    """Gemini's embedding answers carry no token counts: the router's estimate of the
    inputs is charged, never nothing, and the reservation is released."""
    async with running_sidecar(_config(gemini)) as sidecar:
        request = pb.EmbedRequest(
            model="embed-gemini", inputs=[pb.EmbedInput(text="x" * 400) for _ in range(2)]
        )
        await sidecar.stub.Embed(request, metadata=(("authorization", f"Bearer {KEY}"),))
        engine = sidecar.engine

        async def charged() -> None:
            (status,) = await engine.budget_status()
            assert status.budget == "global"
            assert status.spent > 0
            assert status.reserved == 0

        await eventually(charged)


@pytest.mark.parametrize("mode", MODES)
async def test_sensitive_text_and_token_ids_never_reach_gemini(
    mode: str, gemini: GeminiSimulator
) -> None:
    async with running_bridge(_config(gemini), mode) as bridge, bridge.client() as client:
        with pytest.raises(openai.APIStatusError) as sensitive:
            await client.embeddings.create(model="embed-gemini", input=["fine", SSN_TEXT])
        assert "privacy" in sensitive.value.message
        # Token ids cannot be read by the privacy detector: held to local deployments.
        with pytest.raises(openai.APIStatusError):
            await client.embeddings.create(model="embed-gemini", input=[[1, 2, 3]])
    assert gemini.stats.embed_requests == 0


# google-genai subclasses aiohttp's ClientSession, which aiohttp warns about.
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
async def test_google_genai_client_embeds_against_the_simulator(gemini: GeminiSimulator) -> None:
    client = genai.Client(
        api_key=UPSTREAM_KEY,
        http_options=genai_types.HttpOptions(
            base_url=gemini.base_url, retry_options=genai_types.HttpRetryOptions(attempts=1)
        ),
    )
    answer = await client.aio.models.embed_content(
        model=MODEL,
        contents=[genai_types.Content(parts=[genai_types.Part(text=t)]) for t in ("one", "two")],
        config=genai_types.EmbedContentConfig(output_dimensionality=16),
    )
    assert answer.embeddings is not None
    values = [item.values for item in answer.embeddings]
    assert values == [pytest.approx(vector_for(t, 16)) for t in ("one", "two")]
