"""Four sidecar processes sharing one Redis ledger hold one cap exactly under concurrency."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.simulate import OllamaSimulator, OpenAISimulator, SimProfile
from tests.conftest import REDIS_URL
from tests.fleet import serving, write_config
from tests.harness import UPSTREAM_KEY

IN, OUT = 1e-6, 1e-5  # USD per token: one and ten micro-dollars
ANSWER = 20
CALLS = 200
SIDECARS = 4
# A call costs 2 prompt + 20 completion tokens = 202 micro-dollars: the cap holds about 50.
CAP = 50 * 202e-6


def _config(cloud: OpenAISimulator, local: OllamaSimulator, prefix: str) -> dict[str, Any]:
    def cloud_entry(alias: str) -> dict[str, Any]:
        return {
            "model_name": alias,
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": cloud.base_url,
                "api_key": UPSTREAM_KEY,
            },
            "model_info": {
                "locality": "cloud",
                "input_cost_per_token": IN,
                "output_cost_per_token": OUT,
            },
        }

    return {
        "model_list": [
            cloud_entry("cloud"),
            cloud_entry("cloud-only"),
            {
                "model_name": "fast-local",
                "litellm_params": {"model": "ollama/llama3.2:8b", "api_base": local.base_url},
            },
        ],
        "litellm_settings": {"fallbacks": [{"cloud": ["fast-local"]}]},
        "general_settings": {"max_budget": CAP},
        "budget": {
            "ledger": "redis",
            "redis_url": REDIS_URL,
            "redis_prefix": prefix,
            "refresh_interval": 0.2,
        },
        "health": {"probe_interval": 0},
        "timeouts": {"first_token": 10, "idle": 10, "total": 30},
    }


@pytest.mark.slow
async def test_four_sidecars_never_pass_one_shared_cap(redis_prefix: str, tmp_path: Path) -> None:
    profile = SimProfile(ttft=(0.05, 0.05), answer_tokens=ANSWER)
    async with (
        OpenAISimulator(profile=profile, api_key=UPSTREAM_KEY) as cloud,
        OllamaSimulator(profile=SimProfile(answer_tokens=ANSWER)) as local,
    ):
        config = write_config(tmp_path / "fleet.yaml", _config(cloud, local, redis_prefix))
        dirs = [(config, tmp_path / f"sidecar-{i}") for i in range(SIDECARS)]
        async with serving(dirs) as sidecars:
            channels = [grpc.aio.insecure_channel(s.address) for s in sidecars]
            try:
                stubs = itertools.cycle([pb_grpc.RouterStub(c) for c in channels])
                # Half may fall back to local; half may only use the cloud.
                aliases = ["cloud", "cloud-only"] * (CALLS // 2)
                calls = [_chat(next(stubs), alias) for alias in aliases]
                outcomes = await asyncio.gather(*calls)
                # Settlements finish just after the answers: wait until none is held.
                async with asyncio.timeout(10):
                    while True:
                        status = await next(stubs).GetSpend(
                            pb.SpendRequest(budgets_only=True), timeout=10
                        )
                        if status.budgets[0].reserved == 0:
                            break
                        await asyncio.sleep(0.05)
            finally:
                for channel in channels:
                    await channel.close()
    (global_cap,) = status.budgets
    served = {where: outcomes.count(where) for where in set(outcomes)}
    cloud_calls = served.get(("cloud", pb.LOCALITY_CLOUD), 0) + served.get(
        ("cloud-only", pb.LOCALITY_CLOUD), 0
    )
    billed = cloud.stats.prompt_tokens * IN + cloud.stats.completion_tokens * OUT
    # The cap holds, and the ledger says exactly what the upstream's own counts say.
    assert global_cap.spent <= CAP + 1e-12
    assert global_cap.reserved == 0
    assert global_cap.spent == pytest.approx(billed, abs=1e-9)
    assert cloud.stats.requests == cloud.stats.completed == cloud_calls
    # Enough of the cap was used: at worst every reservation was in flight at once.
    assert 44 <= cloud_calls <= 50
    # Everything else was answered locally, or refused as over budget where only the
    # cloud could answer; nothing failed otherwise.
    assert served.get(("cloud", pb.LOCALITY_LOCAL), 0) == CALLS // 2 - served.get(
        ("cloud", pb.LOCALITY_CLOUD), 0
    )
    assert served.get(("cloud-only", "budget"), 0) == CALLS // 2 - served.get(
        ("cloud-only", pb.LOCALITY_CLOUD), 0
    )
    assert local.stats.requests == served.get(("cloud", pb.LOCALITY_LOCAL), 0)


async def _chat(stub: pb_grpc.RouterStub, alias: str) -> tuple[str, Any]:
    request = pb.ChatRequest(
        model=alias,
        messages=[pb.Message(role="user", content="Say hello")],
        params=pb.GenerationParams(max_tokens=ANSWER),
    )
    try:
        answer = await stub.Chat(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return alias, "budget"
        return alias, f"{exc.code().name}: {exc.details()}"
    return alias, answer.route.locality


@pytest.mark.slow
async def test_a_dead_sidecars_reservation_is_charged_in_full_when_it_expires(
    redis_prefix: str, tmp_path: Path
) -> None:
    slow = SimProfile(tokens_per_second=(20.0, 20.0), answer_tokens=400)
    async with (
        OpenAISimulator(profile=slow, api_key=UPSTREAM_KEY) as cloud,
        OllamaSimulator(profile=SimProfile(answer_tokens=ANSWER)) as local,
    ):
        settings = _config(cloud, local, redis_prefix)
        settings["budget"]["reservation_grace"] = 0
        settings["timeouts"] = {"first_token": 5, "idle": 5, "total": 2}
        config = write_config(tmp_path / "dying.yaml", settings)
        async with serving([(config, tmp_path / "doomed")]) as (doomed,):
            channel = grpc.aio.insecure_channel(doomed.address)
            try:
                request = pb.ChatRequest(
                    model="cloud-only",
                    messages=[pb.Message(role="user", content="Say hello")],
                    params=pb.GenerationParams(max_tokens=ANSWER),
                )
                stream = pb_grpc.RouterStub(channel).StreamChat(request, timeout=10)
                async for _ in stream:
                    break  # the call is under way: its reservation is held
                doomed.process.kill()
                await doomed.process.wait()
            finally:
                await channel.close()
        # A survivor's sweep charges the orphaned reservation once its time is up.
        async with (
            serving([(config, tmp_path / "survivor")]) as (survivor,),
            grpc.aio.insecure_channel(survivor.address) as channel,
            asyncio.timeout(15),
        ):
            stub = pb_grpc.RouterStub(channel)
            while True:
                status = await stub.GetSpend(pb.SpendRequest(budgets_only=True), timeout=5)
                if status.budgets[0].reserved == 0 and status.budgets[0].spent > 0:
                    break
                await asyncio.sleep(0.1)
    # The worst case: a byte bound on the prompt ("Say hello": 25 tokens) and 20 answer
    # tokens, at one and ten micro-dollars.
    assert status.budgets[0].spent == pytest.approx((25 * 1 + ANSWER * 10) * 1e-6)
