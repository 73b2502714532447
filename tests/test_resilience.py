"""The fault matrix: every upstream failure, streaming and unary, over real sockets.

A primary group `fast-local` (simulator A) falls back to `strong-local`
(simulator B). Each case asserts what the caller sees, which deployments were
tried in which order, that cooldowns start and end, and that nothing leaks.

The sidecar runs on a fake clock: cooldowns end, and first-token and idle
limits fire, when a test moves time forward, never because the machine was slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sidecar import engine as engine_package
from sidecar.health import State
from sidecar.rpc.api import router_pb2 as pb
from sidecar.simulate import Fault, FaultKind, OllamaSimulator, profile_by_name
from sidecar.simulate.profile import SimProfile
from tests.fake_clock import FakeClock
from tests.harness import Sidecar, chat_request, make_config, running_sidecar, wait_until

EXPECTED = "".join(f"tok{i} " for i in range(20))
COOLDOWN = 0.3
LIMIT = 0.3  # the first-token and idle limits of the stack, in fake seconds
_ENGINE_DIR = Path(engine_package.__file__).parent


def engine_tasks() -> list[asyncio.Task[object]]:
    """Tasks running code of the engine package (attempts raced by a hedge, for one)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and Path(code.co_filename).parent == _ENGINE_DIR:
            found.append(task)
    return found


@dataclass
class Stack:
    a: OllamaSimulator
    b: OllamaSimulator
    sidecar: Sidecar
    clock: FakeClock

    def state(self, deployment: str) -> State:
        return self.sidecar.engine.health[deployment].state

    async def assert_no_leaks(self) -> None:
        health = self.sidecar.engine.health
        assert await wait_until(lambda: self.a.stats.in_flight == 0, within=2.0)
        assert await wait_until(lambda: self.b.stats.in_flight == 0, within=2.0)
        assert [h.in_flight for h in health.all()] == [0, 0]
        assert engine_tasks() == []


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    instant = profile_by_name("instant")
    async with OllamaSimulator(profile=instant) as a, OllamaSimulator(profile=instant) as b:
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
            timeouts={"first_token": LIMIT, "idle": LIMIT, "total": 10},
            health={"failure_threshold": 1, "cooldown": COOLDOWN, "probe_interval": 0},
        )
        clock = FakeClock()
        async with running_sidecar(config, clock=clock) as sidecar:
            yield Stack(a, b, sidecar, clock)


async def _call(
    stack: Stack, streaming: bool, *, stalled: Callable[[], bool] | None = None
) -> tuple[str, pb.RouteTaken]:
    """One call to fast-local; once `stalled()` holds, time moves past the stack's limits."""
    request = chat_request("fast-local")

    async def call() -> tuple[str, pb.RouteTaken]:
        if streaming:
            chunks = [c async for c in stack.sidecar.stub.StreamChat(request, timeout=5)]
            return "".join(c.delta for c in chunks), chunks[0].route
        response = await stack.sidecar.stub.Chat(request, timeout=5)
        return response.content, response.route

    if stalled is None:
        return await call()
    task = asyncio.create_task(call())
    assert await wait_until(stalled, within=2.0)
    stack.clock.advance(LIMIT + 0.01)
    return await task


BEFORE_FIRST_TOKEN = [
    pytest.param(Fault("http_500"), id="http-500"),
    pytest.param(Fault("http_503"), id="http-503"),
    pytest.param(Fault("hang"), id="hang-before-first-byte"),
    pytest.param(Fault("malformed", after_tokens=0), id="malformed-first-chunk"),
]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "unary"])
@pytest.mark.parametrize("fault", BEFORE_FIRST_TOKEN)
async def test_failure_before_first_token_falls_back_invisibly(
    stack: Stack, fault: Fault, streaming: bool
) -> None:
    stack.a.fault = fault
    # A hanging upstream is given up on when the first-token limit passes.
    stalled = (lambda: stack.a.stats.requests == 1) if fault.kind == "hang" else None
    text, route = await _call(stack, streaming, stalled=stalled)
    assert text == EXPECTED
    assert (route.deployment, route.attempts) == ("strong-local/0", 2)
    assert (stack.a.stats.requests, stack.b.stats.requests) == (1, 1)
    # The failure opened a cooldown: the next call skips A without trying it.
    assert stack.state("fast-local/0") is State.COOLING
    text, route = await _call(stack, streaming)
    assert route.deployment == "strong-local/0"
    assert stack.a.stats.requests == 1
    # When the cooldown ends, one request probes A again and closes the circuit.
    stack.a.fault = None
    stack.clock.advance(COOLDOWN)
    text, route = await _call(stack, streaming)
    assert (route.deployment, route.attempts) == ("fast-local/0", 1)
    assert stack.state("fast-local/0") is State.UP
    await stack.assert_no_leaks()


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "unary"])
async def test_connection_refused_falls_back(stack: Stack, streaming: bool) -> None:
    await stack.a.set_fault(Fault("refuse"))
    text, route = await _call(stack, streaming)
    assert text == EXPECTED
    assert (route.deployment, route.attempts) == ("strong-local/0", 2)
    assert stack.state("fast-local/0") is State.COOLING
    assert "cannot connect" in stack.sidecar.engine.health["fast-local/0"].last_error
    await stack.assert_no_leaks()


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "unary"])
async def test_retry_after_sets_the_cooldown(stack: Stack, streaming: bool) -> None:
    stack.a.fault = Fault("http_429", retry_after=0.6)
    _, route = await _call(stack, streaming)
    assert route.deployment == "strong-local/0"
    health = stack.sidecar.engine.health["fast-local/0"]
    assert health.state is State.COOLING
    assert "retry after 0.6s" in health.reason
    # Longer than the configured cooldown: the upstream's word wins.
    stack.a.fault = None
    stack.clock.advance(COOLDOWN + 0.05)
    _, route = await _call(stack, streaming)
    assert route.deployment == "strong-local/0"
    stack.clock.advance(0.6 - COOLDOWN - 0.05)
    _, route = await _call(stack, streaming)
    assert route.deployment == "fast-local/0"
    await stack.assert_no_leaks()


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("drop", grpc.StatusCode.UNAVAILABLE),
        ("malformed", grpc.StatusCode.INTERNAL),
        ("error_line", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_stream_failing_after_first_token_ends_with_an_error(
    stack: Stack, kind: FaultKind, code: grpc.StatusCode
) -> None:
    stack.a.fault = Fault(kind, after_tokens=3)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in stack.sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5):
            received.append(chunk.delta)
    assert err.value.code() == code
    assert "".join(received) == "tok0 tok1 tok2 "
    # No silent switch: B was never asked.
    assert stack.b.stats.requests == 0
    assert stack.state("fast-local/0") is State.COOLING
    await stack.assert_no_leaks()


@pytest.mark.parametrize("kind", ["drop", "malformed", "error_line"])
async def test_unary_failing_after_first_token_still_falls_back(
    stack: Stack, kind: FaultKind
) -> None:
    # A unary caller has seen nothing yet, so the next candidate may still answer.
    stack.a.fault = Fault(kind, after_tokens=3)
    response = await stack.sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    assert response.content == EXPECTED
    assert (response.route.deployment, response.route.attempts) == ("strong-local/0", 2)
    await stack.assert_no_leaks()


async def test_slow_drip_below_idle_timeout_is_served(stack: Stack) -> None:
    # Each gap is below the idle limit although together they are well past it: the
    # limit is on the silence between tokens, not on the time since the first one.
    stack.a.profile = SimProfile(ttft=(0.0, 0.0), tokens_per_second=(10.0, 10.0), answer_tokens=4)
    received = []
    async for chunk in stack.sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5):
        received.append(chunk.delta)
        if chunk.route.deployment:
            route = chunk.route
        stack.clock.advance(LIMIT * 0.7)
    assert "".join(received) == "tok0 tok1 tok2 tok3 "
    assert (route.deployment, route.attempts) == ("fast-local/0", 1)
    assert stack.b.stats.requests == 0
    await stack.assert_no_leaks()


async def test_slow_drip_of_a_whole_answer_is_served() -> None:
    # A unary caller sees nothing until the end, so time cannot be moved per token here:
    # this one runs on the real clock, with limits ten times the gap between tokens.
    drip = SimProfile(ttft=(0.0, 0.0), tokens_per_second=(10.0, 10.0), answer_tokens=4)
    async with OllamaSimulator(profile=drip) as a, OllamaSimulator() as b:
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
            timeouts={"first_token": 2.0, "idle": 1.0, "total": 10},
        )
        async with running_sidecar(config) as sidecar:
            response = await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    assert response.content == "tok0 tok1 tok2 tok3 "
    assert (response.route.deployment, response.route.attempts) == ("fast-local/0", 1)
    assert b.stats.requests == 0


async def test_drip_past_idle_timeout_ends_stream_with_deadline(stack: Stack) -> None:
    stack.a.profile = SimProfile(ttft=(0.0, 0.0), tokens_per_second=(2.0, 2.0), answer_tokens=4)
    received = []

    async def time_flies() -> None:
        # Past the idle limit every few real milliseconds, while the upstream's next token
        # is half a real second away.
        while True:
            stack.clock.advance(LIMIT + 0.01)
            await asyncio.sleep(0.005)

    flying: asyncio.Task[None] | None = None
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in stack.sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5):
            received.append(chunk.delta)
            flying = flying or asyncio.create_task(time_flies())
    assert flying is not None
    flying.cancel()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received == ["tok0 "]
    assert await wait_until(lambda: stack.a.stats.disconnects == 1, within=1.0)
    await stack.assert_no_leaks()


async def test_no_fallback_hint_stays_in_the_group(stack: Stack) -> None:
    stack.a.fault = Fault("http_500")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.sidecar.stub.Chat(
            chat_request("fast-local", hints=pb.RoutingHints(no_fallback=True)), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert stack.b.stats.requests == 0


async def test_every_candidate_failing_names_each_one(stack: Stack) -> None:
    stack.a.fault = Fault("http_500")
    stack.b.fault = Fault("http_503")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    details = err.value.details() or ""
    assert "fast-local/0" in details
    assert "strong-local/0" in details
    await stack.assert_no_leaks()


async def test_upstream_stopped_mid_run_of_200_streams() -> None:
    slowish = SimProfile(ttft=(0.02, 0.08), tokens_per_second=(200.0, 200.0), answer_tokens=10)
    async with (
        OllamaSimulator(profile=slowish) as a,
        OllamaSimulator(profile=profile_by_name("instant")) as b,
    ):
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
            timeouts={"first_token": 2, "idle": 2, "total": 20},
        )
        async with running_sidecar(config) as sidecar:

            async def one() -> tuple[bool, int, str]:
                received = 0
                try:
                    async for chunk in sidecar.stub.StreamChat(
                        chat_request("fast-local"), timeout=15
                    ):
                        received += bool(chunk.delta)
                except grpc.aio.AioRpcError as exc:
                    return False, received, exc.code().name
                return True, received, ""

            calls = [asyncio.create_task(one()) for _ in range(200)]
            assert await wait_until(lambda: a.stats.completed >= 20, within=5.0)
            streaming_when_stopped = a.stats.in_flight
            await a.stop()
            results = await asyncio.gather(*calls)
            assert b.stats.completed > 0, "nothing fell back to strong-local"
            # A request fails only if it had already started streaming when A died.
            failed_before_streaming = [r for r in results if not r[0] and r[1] == 0]
            assert failed_before_streaming == []
            failed = [r for r in results if not r[0]]
            assert len(failed) <= streaming_when_stopped
            assert [h.in_flight for h in sidecar.engine.health.all()] == [0, 0]


async def test_hedge_cancels_slow_primary_and_serves_from_secondary() -> None:
    slow = SimProfile(ttft=(2.0, 2.0), tokens_per_second=None, answer_tokens=20)
    async with (
        OllamaSimulator(profile=slow) as a,
        OllamaSimulator(profile=profile_by_name("instant")) as b,
    ):
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
            router_settings={"model_group_retry_policy": {"fast-local": {"hedge_after_ms": 50}}},
        )
        async with running_sidecar(config) as sidecar:
            chunks = [
                c async for c in sidecar.stub.StreamChat(chat_request("fast-local"), timeout=5)
            ]
            assert "".join(c.delta for c in chunks) == EXPECTED
            assert (chunks[0].route.deployment, chunks[0].route.attempts) == ("strong-local/0", 2)
            # The slow primary was cancelled at once, not left to finish.
            assert await wait_until(lambda: a.stats.disconnects == 1, within=1.0)
            assert engine_tasks() == []
            assert a.stats.completed == 0
            assert [h.in_flight for h in sidecar.engine.health.all()] == [0, 0]


async def test_the_leak_check_sees_the_attempts_a_hedge_races() -> None:
    # The leak check above must not go blind: while a hedge races two attempts, it sees both.
    slow = SimProfile(ttft=(0.3, 0.3), tokens_per_second=None, answer_tokens=20)
    async with OllamaSimulator(profile=slow) as a, OllamaSimulator(profile=slow) as b:
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
            router_settings={"model_group_retry_policy": {"fast-local": {"hedge_after_ms": 20}}},
        )
        async with running_sidecar(config) as sidecar:
            call = sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
            assert await wait_until(lambda: len(engine_tasks()) == 2, within=2.0)
            response = await call
            assert response.content == EXPECTED
            assert engine_tasks() == []


async def test_hedge_never_goes_to_cloud_unless_allowed() -> None:
    slow = SimProfile(ttft=(0.3, 0.3), tokens_per_second=None, answer_tokens=20)
    async with (
        OllamaSimulator(profile=slow) as a,
        OllamaSimulator(profile=profile_by_name("instant")) as cloud,
    ):
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                (
                    "cloud-fast",
                    "ollama/pretend-cloud",
                    {"api_base": cloud.base_url, "model_info": {"locality": "cloud", "free": True}},
                ),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["cloud-fast"]}]},
            router_settings={"model_group_retry_policy": {"fast-local": {"hedge_after_ms": 20}}},
        )
        async with running_sidecar(config) as sidecar:
            response = await sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
            assert response.route.deployment == "fast-local/0"
            assert cloud.stats.requests == 0


async def test_max_parallel_requests_spills_to_next_candidate() -> None:
    slow = SimProfile(ttft=(0.2, 0.2), tokens_per_second=None, answer_tokens=5)
    async with (
        OllamaSimulator(profile=slow) as a,
        OllamaSimulator(profile=profile_by_name("instant")) as b,
    ):
        config = make_config(
            [
                (
                    "fast-local",
                    "ollama/llama3.2:8b",
                    {"api_base": a.base_url, "max_parallel_requests": 2},
                ),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
        )
        async with running_sidecar(config) as sidecar:
            responses = await asyncio.gather(
                *(sidecar.stub.Chat(chat_request("fast-local"), timeout=5) for _ in range(5))
            )
            served = sorted(r.route.deployment for r in responses)
            assert served.count("fast-local/0") == 2
            assert served.count("strong-local/0") == 3
            assert a.stats.requests == 2


async def test_rate_limited_everywhere_is_resource_exhausted_with_retry_after(
    stack: Stack,
) -> None:
    stack.a.fault = Fault("http_429", retry_after=2)
    stack.b.fault = Fault("http_429", retry_after=3)
    call = stack.sidecar.stub.Chat(chat_request("fast-local"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The soonest either upstream said it could take a call again.
    assert dict(err.value.trailing_metadata() or ())["retry-after"] == "2.000"
