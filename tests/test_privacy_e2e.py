"""The privacy rule end to end: sensitive data reaches local deployments only, or nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest

from sidecar.errors import PrivacyBlocked
from sidecar.routing import Candidate
from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator, profile_by_name
from sidecar.types import ChatRequest, Message
from tests.harness import Sidecar, chat_request, make_config, running_sidecar

SSN_PROMPT = "Patient John Doe, SSN 123-45-6789, asks about his results."


@pytest.fixture
async def local() -> AsyncIterator[OllamaSimulator]:
    async with OllamaSimulator(profile=profile_by_name("instant")) as sim:
        yield sim


@pytest.fixture
async def cloud() -> AsyncIterator[OpenAISimulator]:
    async with OpenAISimulator(profile=profile_by_name("instant"), api_key="sk-test") as sim:
        yield sim


@pytest.fixture
async def sidecar(local: OllamaSimulator, cloud: OpenAISimulator) -> AsyncIterator[Sidecar]:
    cloud_params = {
        "api_base": cloud.base_url,
        "api_key": "sk-test",
        "model_info": {"locality": "cloud"},
    }
    config = make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": local.base_url}),
            ("strong-local", "ollama/llama3.3:70b", {"api_base": local.base_url}),
            ("code-local", "ollama/qwen2.5-coder:32b", {"api_base": local.base_url}),
            ("cloud-strong", "openai/gpt-4o", cloud_params),
            ("cloud-fast", "openai/gpt-4o-mini", cloud_params),
        ],
        litellm_settings={"default_fallbacks": ["cloud-fast"]},
        health={"probe_interval": 0, "failure_threshold": 1},
    )
    async with running_sidecar(config) as running:
        yield running


async def test_sensitive_prompt_with_local_down_is_held_back(
    sidecar: Sidecar, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    await local.set_fault(Fault("refuse"))
    for rpc in (sidecar.stub.Chat, sidecar.stub.StreamChat):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call = rpc(chat_request("auto", SSN_PROMPT), timeout=5)
            if rpc is sidecar.stub.StreamChat:
                [c async for c in call]
            else:
                await call
        assert err.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    # The default fallback is a cloud group, yet the cloud never saw a request.
    assert cloud.stats.requests == 0


async def test_benign_prompt_with_local_down_falls_back_to_cloud(
    sidecar: Sidecar, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    await local.set_fault(Fault("refuse"))
    response = await sidecar.stub.Chat(chat_request("fast-local", "What is 2+2?"), timeout=5)
    assert response.route.deployment == "cloud-fast/0"
    assert response.route.locality == pb.LOCALITY_CLOUD
    assert cloud.stats.requests == 1


async def test_sensitive_prompt_to_cloud_alias_is_refused(
    sidecar: Sidecar, cloud: OpenAISimulator
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(chat_request("cloud-strong", SSN_PROMPT), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "privacy" in (err.value.details() or "")
    assert cloud.stats.requests == 0


async def test_route_explains_the_privacy_decision(sidecar: Sidecar) -> None:
    route_plan = await sidecar.stub.Route(chat_request("auto", SSN_PROMPT), timeout=5)
    assert route_plan.sensitive
    assert route_plan.candidates
    assert all(c.locality == pb.LOCALITY_LOCAL for c in route_plan.candidates)
    assert any("sensitive" in note for note in route_plan.notes)


async def test_exit_point_refuses_cloud_even_if_a_plan_lists_it(
    sidecar: Sidecar, cloud: OpenAISimulator
) -> None:
    # A plan that (through some future bug) lists a cloud candidate for a sensitive
    # request: the engine's exit point must still refuse to send it.
    engine = sidecar.engine
    request = ChatRequest(model="fast-local", messages=(Message("user", SSN_PROMPT),))
    honest = engine.plan(request)
    assert honest.sensitive
    cloud_deployment = engine.config.groups["cloud-fast"].deployments[0]
    forged = dataclasses.replace(
        honest, candidates=(Candidate(cloud_deployment, "forged"),), sensitive=True
    )
    stream = engine.execute(request, forged)
    with pytest.raises(PrivacyBlocked):
        await stream.__anext__()
    await stream.aclose()
    assert cloud.stats.requests == 0


async def _cool_down_local(sidecar: Sidecar, local: OllamaSimulator) -> None:
    """One failed call: with failure_threshold 1 every local deployment's first attempt
    fails, and the benign call lands on the cloud fallback."""
    local.fault = Fault("http_500", count=1)
    await sidecar.stub.Chat(chat_request("fast-local", "What is 2+2?"), timeout=5)
    assert not sidecar.engine.health.is_available("fast-local/0")


async def test_sensitive_prompt_whose_only_local_deployment_is_cooling_is_tried_there(
    sidecar: Sidecar, local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    await _cool_down_local(sidecar, local)
    before = cloud.stats.requests
    request = chat_request("fast-local", SSN_PROMPT)
    route_plan = await sidecar.stub.Route(request, timeout=5)
    assert [c.deployment for c in route_plan.candidates] == ["fast-local/0"]
    assert any("panic" in note for note in route_plan.notes)
    # Cooling, yet the backend answers again: the call is served rather than refused untried.
    response = await sidecar.stub.Chat(request, timeout=5)
    assert response.route.deployment == "fast-local/0"
    assert response.content
    assert sidecar.engine.health.is_available("fast-local/0")
    assert cloud.stats.requests == before  # and the cloud never saw it


async def test_with_the_panic_threshold_off_a_cooling_local_is_not_tried(
    local: OllamaSimulator, cloud: OpenAISimulator
) -> None:
    config = make_config(
        [("fast-local", "ollama/llama3.2:8b", {"api_base": local.base_url})],
        health={"probe_interval": 0, "failure_threshold": 1, "cooldown": 30, "panic_threshold": 0},
    )
    async with running_sidecar(config) as sidecar:
        local.fault = Fault("http_500", count=1)
        with pytest.raises(grpc.aio.AioRpcError):
            await sidecar.stub.Chat(chat_request("fast-local", SSN_PROMPT), timeout=5)
        tried = local.stats.requests
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Chat(chat_request("fast-local", SSN_PROMPT), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cooling down" in (err.value.details() or "")
        assert local.stats.requests == tried
