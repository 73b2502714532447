"""End to end over real sockets: gRPC client -> sidecar -> simulated Ollama / OpenAI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import orjson
import pytest

from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import Fault, FaultKind, OllamaSimulator, OpenAISimulator
from sidecar.simulate.profile import SimProfile
from tests.harness import (
    UPSTREAM_KEY,
    Sidecar,
    chat_request,
    make_config,
    running_sidecar,
    wait_until,
)

EXPECTED = "".join(f"tok{i} " for i in range(20))


@pytest.fixture
async def sidecar(ollama: OllamaSimulator, openai_sim: OpenAISimulator) -> AsyncIterator[Sidecar]:
    config = make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url}),
            (
                "vllm-local",
                "openai/qwen2.5",
                {"api_base": openai_sim.base_url, "api_key": UPSTREAM_KEY},
            ),
            (
                "cloud-fast",
                "openai/gpt-4o-mini",
                {
                    "api_base": openai_sim.base_url,
                    "api_key": UPSTREAM_KEY,
                    "model_info": {"locality": "cloud"},
                },
            ),
        ],
        timeouts={"first_token": 2, "idle": 1, "total": 10},
    )
    async with running_sidecar(config) as running:
        yield running


@pytest.mark.parametrize(
    ("alias", "provider", "locality"),
    [
        ("fast-local", "ollama", pb.LOCALITY_LOCAL),
        ("vllm-local", "openai", pb.LOCALITY_LOCAL),
        ("cloud-fast", "openai", pb.LOCALITY_CLOUD),
    ],
)
async def test_unary_round_trip(sidecar: Sidecar, alias: str, provider: str, locality: int) -> None:
    call = sidecar.stub.Chat(chat_request(alias, request_id="req-1"), timeout=5)
    response = await call
    assert response.content == EXPECTED
    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens == 20
    assert response.usage.completion_tokens_known
    assert response.usage.prompt_tokens_known
    route = response.route
    assert (route.deployment, route.provider, route.locality) == (f"{alias}/0", provider, locality)
    assert route.attempts == 1
    assert route.request_id == "req-1"
    trailing = dict(await call.trailing_metadata())
    assert trailing["x-sidecar-deployment"] == f"{alias}/0"
    assert trailing["x-request-id"] == "req-1"


@pytest.mark.parametrize("alias", ["fast-local", "vllm-local"])
async def test_stream_preserves_tokens_and_reports_route(sidecar: Sidecar, alias: str) -> None:
    chunks = [c async for c in sidecar.stub.StreamChat(chat_request(alias), timeout=5)]
    assert "".join(c.delta for c in chunks) == EXPECTED
    # Order is preserved token by token; coalescing may merge neighbours, never reorder.
    joined = "".join(c.delta for c in chunks)
    assert joined.split() == [f"tok{i}" for i in range(20)]
    assert chunks[0].HasField("route")
    assert chunks[0].route.deployment == f"{alias}/0"
    assert sum(c.HasField("route") for c in chunks) == 1
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 20
    assert all(not c.finish_reason for c in chunks[:-1])


async def test_stream_relays_each_token_as_it_arrives(ollama: OllamaSimulator) -> None:
    # At 50 tokens/s every token arrives alone, so nothing may be merged or held back.
    ollama.profile = SimProfile(ttft=(0.0, 0.0), tokens_per_second=(50.0, 50.0), answer_tokens=5)
    config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
    async with running_sidecar(config) as sidecar:
        chunks = [c async for c in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5)]
    assert [c.delta for c in chunks if c.delta] == [f"tok{i} " for i in range(5)]


async def test_a_fast_upstream_is_relayed_whole_and_in_order(ollama: OllamaSimulator) -> None:
    # 2,000 tokens/s: tokens half a millisecond apart, which the door gathers into fewer
    # messages (servicer.COALESCE_WINDOW); gathering may merge neighbours, never reorder,
    # drop or hold back the end.
    ollama.profile = SimProfile(
        ttft=(0.0, 0.0), tokens_per_second=(2000.0, 2000.0), answer_tokens=60
    )
    config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
    async with running_sidecar(config) as sidecar:
        chunks = [c async for c in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5)]
    assert "".join(c.delta for c in chunks) == "".join(f"tok{i} " for i in range(60))
    assert chunks[0].HasField("route")
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 60


async def test_generation_params_reach_ollama(sidecar: Sidecar, ollama: OllamaSimulator) -> None:
    request = chat_request(
        "fast-local",
        params=pb.GenerationParams(max_tokens=3, temperature=0.2, top_p=0.9, stop=["x"], seed=7),
        extra_json=orjson.dumps({"keep_alive": "10m"}).decode(),
    )
    response = await sidecar.stub.Chat(request, timeout=5)
    assert response.content == "tok0 tok1 tok2 "
    assert response.finish_reason == "length"
    body = ollama.stats.bodies[-1]
    assert body["options"]["num_predict"] == 3
    assert body["options"]["temperature"] == pytest.approx(0.2)
    assert body["options"]["top_p"] == pytest.approx(0.9)
    assert body["options"]["stop"] == ["x"]
    assert body["options"]["seed"] == 7
    assert body["keep_alive"] == "10m"
    assert body["stream"] is True


async def test_openai_upstream_always_asked_for_usage(
    sidecar: Sidecar, openai_sim: OpenAISimulator
) -> None:
    await sidecar.stub.Chat(chat_request("vllm-local"), timeout=5)
    body = openai_sim.stats.bodies[-1]
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "qwen2.5"


async def test_unknown_alias_is_not_found_and_lists_aliases(sidecar: Sidecar) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(chat_request("nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (err.value.details() or "")
    assert "fast-local" in (err.value.details() or "")
    assert "cloud-fast" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("request_msg", "field"),
    [
        (pb.ChatRequest(model="fast-local"), "messages"),
        (chat_request("fast-local", params=pb.GenerationParams(max_tokens=-1)), "max_tokens"),
        (
            pb.ChatRequest(model="fast-local", messages=[pb.Message(role="wizard", content="hi")]),
            "messages[0].role",
        ),
        (chat_request("fast-local", extra_json="{not json"), "extra_json"),
    ],
)
async def test_invalid_requests_name_the_field(
    sidecar: Sidecar, request_msg: pb.ChatRequest, field: str
) -> None:
    for rpc in (sidecar.stub.Chat, sidecar.stub.StreamChat):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call = rpc(request_msg, timeout=5)
            if rpc is sidecar.stub.StreamChat:
                [c async for c in call]
            else:
                await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault("http_500"), grpc.StatusCode.UNAVAILABLE),
        (Fault("http_503"), grpc.StatusCode.UNAVAILABLE),
        (Fault("malformed", after_tokens=0), grpc.StatusCode.INTERNAL),
    ],
)
async def test_upstream_failures_map_to_status(
    sidecar: Sidecar, ollama: OllamaSimulator, fault: Fault, code: grpc.StatusCode
) -> None:
    ollama.fault = fault
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    assert err.value.code() == code
    assert "fast-local/0" in (err.value.details() or "")


async def test_refused_connection_is_unavailable_naming_deployment(
    sidecar: Sidecar, ollama: OllamaSimulator
) -> None:
    await ollama.set_fault(Fault("refuse"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5)]
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fast-local/0" in (err.value.details() or "")
    await ollama.set_fault(None)
    response = await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    assert response.content == EXPECTED


@pytest.mark.parametrize("kind", ["malformed", "drop", "error_line"])
async def test_failure_after_first_token_ends_stream_with_error(
    sidecar: Sidecar, ollama: OllamaSimulator, kind: FaultKind
) -> None:
    ollama.fault = Fault(kind, after_tokens=3)
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5):
            received.append(chunk.delta)
    expected = grpc.StatusCode.INTERNAL if kind == "malformed" else grpc.StatusCode.UNAVAILABLE
    assert err.value.code() == expected
    assert "".join(received) == "tok0 tok1 tok2 "
    assert "fast-local/0" in (err.value.details() or "")


async def test_bad_calls_do_not_disturb_good_ones(
    sidecar: Sidecar, ollama: OllamaSimulator
) -> None:
    async def good() -> str:
        chunks = [c async for c in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5)]
        return "".join(c.delta for c in chunks)

    async def bad(i: int) -> grpc.StatusCode:
        request = (
            chat_request("missing-model")
            if i % 2
            else chat_request("fast-local", params=pb.GenerationParams(max_tokens=-5))
        )
        try:
            await sidecar.stub.Chat(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    results = await asyncio.gather(*(good() for _ in range(20)), *(bad(i) for i in range(20)))
    assert results[:20] == [EXPECTED] * 20
    assert set(results[20:]) == {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


async def test_cancel_closes_upstream_promptly(ollama: OllamaSimulator) -> None:
    ollama.profile = SimProfile(ttft=(0.0, 0.0), tokens_per_second=(5.0, 5.0), answer_tokens=50)
    config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
    async with running_sidecar(config) as sidecar:
        call = sidecar.stub.StreamChat(chat_request("fast-local"), timeout=10)
        first = await call.read()
        assert first.delta == "tok0 "
        assert ollama.stats.in_flight == 1
        call.cancel()
        # The promise: the upstream sees the disconnect within 100 ms.
        assert await wait_until(lambda: ollama.stats.disconnects == 1, within=0.1)
        assert await wait_until(lambda: ollama.stats.in_flight == 0, within=1.0)


async def test_caller_deadline_closes_hung_upstream(ollama: OllamaSimulator) -> None:
    ollama.fault = Fault("hang")
    config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
    async with running_sidecar(config) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Chat(chat_request("fast-local"), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await wait_until(lambda: ollama.stats.disconnects == 1, within=1.0)


async def test_first_token_timeout_is_deadline_exceeded(ollama: OllamaSimulator) -> None:
    ollama.fault = Fault("hang")
    config = make_config(
        [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
        timeouts={"first_token": 0.2},
    )
    async with running_sidecar(config) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no first token" in (err.value.details() or "")
    assert await wait_until(lambda: ollama.stats.disconnects == 1, within=1.0)


async def test_idle_gap_mid_stream_ends_with_deadline_exceeded(ollama: OllamaSimulator) -> None:
    # One token per second against a 0.2 s idle limit: the second token never comes in time.
    ollama.profile = SimProfile(ttft=(0.0, 0.0), tokens_per_second=(1.0, 1.0), answer_tokens=5)
    config = make_config(
        [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
        timeouts={"idle": 0.2},
    )
    async with running_sidecar(config) as sidecar:
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for chunk in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5):
                received.append(chunk.delta)
    assert received == ["tok0 "]
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "mid-stream" in (err.value.details() or "")


async def test_list_models_and_route(sidecar: Sidecar) -> None:
    models = await sidecar.stub.ListModels(pb.ListModelsRequest(), timeout=5)
    names = [m.name for m in models.models]
    # The auto alias comes last, with the aliases it routes to and no deployments of its own.
    assert names == ["fast-local", "vllm-local", "cloud-fast", "auto"]
    assert models.models[-1].routes_to
    assert set(models.models[-1].routes_to) <= set(names)
    assert not models.models[-1].deployments
    assert not models.simulated
    fast = models.models[0].deployments[0]
    assert (fast.provider, fast.locality, fast.upstream_model) == (
        "ollama",
        pb.LOCALITY_LOCAL,
        "llama3.2:8b",
    )
    route_plan = await sidecar.stub.Route(chat_request("cloud-fast"), timeout=5)
    assert [c.deployment for c in route_plan.candidates] == ["cloud-fast/0"]
    assert route_plan.candidates[0].locality == pb.LOCALITY_CLOUD
    assert route_plan.candidates[0].reason


async def test_local_only_hint_never_reaches_cloud(
    sidecar: Sidecar, openai_sim: OpenAISimulator
) -> None:
    before = openai_sim.stats.requests
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.stub.Chat(
            chat_request("cloud-fast", hints=pb.RoutingHints(local_only=True)), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "privacy" in (err.value.details() or "")
    assert openai_sim.stats.requests == before
