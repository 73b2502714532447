"""plan(): aliases, task tags, auto tiers, context windows, privacy and health, rule by rule."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config.model import (
    Deployment,
    LitellmSettings,
    ModelGroup,
    ProviderKind,
    RetryPolicy,
    RouterSettings,
    SidecarConfig,
)
from sidecar.errors import ContextWindowExceeded, PrivacyBlocked, UnknownModel
from sidecar.routing import RoutePlan, compile_routing, plan
from sidecar.types import ChatRequest, GenerationParams, Locality, Message, RoutingHints, ToolCall

LOCAL, CLOUD = Locality.LOCAL, Locality.CLOUD
PROSE = "The team met on Tuesday to talk about the new office and the move. "


def dep(
    group: str,
    index: int = 0,
    *,
    locality: Locality = LOCAL,
    window: int | None = None,
    output: int | None = None,
    weight: float = 1.0,
) -> Deployment:
    return Deployment(
        id=f"{group}/{index}",
        model_group=group,
        provider=ProviderKind.OLLAMA if locality is LOCAL else ProviderKind.OPENAI,
        upstream_model=group,
        api_base="http://127.0.0.1:1",
        locality=locality,
        context_window=window,
        max_output_tokens=output,
        weight=weight,
    )


def make_config(
    *deployments: Deployment,
    fallbacks: dict[str, tuple[str, ...]] | None = None,
    routing_rules: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> SidecarConfig:
    grouped: dict[str, list[Deployment]] = {}
    for d in deployments:
        grouped.setdefault(d.model_group, []).append(d)
    return SidecarConfig(
        groups={name: ModelGroup(name, tuple(ds)) for name, ds in grouped.items()},
        litellm_settings=LitellmSettings(context_window_fallbacks=fallbacks or {}),
        routing_rules=routing_rules or {},
        privacy=privacy or {},
    )


def seed_config(**kwargs: Any) -> SidecarConfig:
    """The seed's aliases, with the context windows an operator would give them."""
    return make_config(
        dep("fast-local", window=8_192, output=4_096),
        dep("strong-local", window=32_768, output=8_192),
        dep("code-local", window=32_768, output=8_192),
        dep("cloud-strong", locality=CLOUD, window=128_000, output=16_384),
        dep("cloud-fast", locality=CLOUD, window=128_000, output=16_384),
        fallbacks={"fast-local": ("strong-local",), "strong-local": ("cloud-strong",)},
        **kwargs,
    )


def chat(
    text: str = "hello",
    *,
    model: str = "auto",
    messages: int = 1,
    metadata: dict[str, str] | None = None,
    local_only: bool = False,
    no_fallback: bool = False,
    max_tokens: int | None = None,
) -> ChatRequest:
    turns = tuple(
        Message("user" if i % 2 == 0 else "assistant", text if i == messages - 1 else "ok")
        for i in range(messages)
    )
    return ChatRequest(
        model=model,
        messages=turns,
        params=GenerationParams(max_tokens=max_tokens),
        metadata=metadata or {},
        hints=RoutingHints(local_only=local_only, no_fallback=no_fallback),
    )


def route(request: ChatRequest, config: SidecarConfig) -> RoutePlan:
    return plan(request, config, compile_routing(config))


def ids(routed: RoutePlan) -> list[str]:
    return [c.deployment.id for c in routed.candidates]


def prose(tokens: int) -> str:
    """Plain prose of roughly `tokens` estimated tokens."""
    return PROSE * max(1, tokens // 16)


# --- explicit aliases -----------------------------------------------------------------


def test_an_explicit_alias_plans_its_group() -> None:
    routed = route(chat("Classify: great product!", model="cloud-fast"), seed_config())
    assert routed.model == "cloud-fast"
    assert ids(routed) == ["cloud-fast/0"]
    assert routed.candidates[0].reason == "alias cloud-fast"
    assert not routed.sensitive
    assert routed.sensitive_reasons == ()
    assert routed.notes == ()
    assert 5 < routed.estimated_prompt_tokens < 20


def test_an_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownModel, match=r"unknown model 'gpt-5'; known models: auto, cloud-fast"
    ):
        route(chat(model="gpt-5"), seed_config())


def test_a_group_of_several_deployments_is_shuffled_by_weight() -> None:
    config = make_config(dep("g", 0, weight=1.0), dep("g", 1, weight=3.0))
    policy = compile_routing(config)
    draws = iter([0.9, 0.1])  # g/0 draws 0.9, g/1 draws 0.1 ** (1/3) = 0.46
    routed = plan(chat(model="g"), config, policy, rand=lambda: next(draws))
    assert ids(routed) == ["g/0", "g/1"]
    assert all(c.reason == "alias g" for c in routed.candidates)


def test_the_policy_must_come_from_the_same_config() -> None:
    config = seed_config()
    with pytest.raises(ValueError, match="another configuration"):
        plan(chat(), config, compile_routing(seed_config()))
    # Without a policy, plan() compiles one (fine for one-off use, not for serving).
    assert ids(plan(chat(model="code-local"), config)) == ["code-local/0"]


# --- task tags ------------------------------------------------------------------------

TASKS = {"tasks": {"classify": "fast-local", "code": "code-local", "deep": "cloud-strong"}}


@pytest.mark.parametrize(
    ("model", "task", "alias", "reason", "notes"),
    [
        ("auto", "classify", "fast-local", "task classify -> fast-local", ()),
        ("", "deep", "cloud-strong", "task deep -> cloud-strong", ()),
        (
            "strong-local",
            "classify",
            "strong-local",
            "alias strong-local",
            ("task 'classify' ignored: the request names model strong-local",),
        ),
        (
            "auto",
            "poetry",
            "fast-local",
            "auto: simple (~8 tokens) -> fast-local",
            ("task 'poetry' has no rule: auto routing",),
        ),
    ],
)
def test_task_tags(model: str, task: str, alias: str, reason: str, notes: tuple[str, ...]) -> None:
    routed = route(chat(model=model, metadata={"task": task}), seed_config(routing_rules=TASKS))
    assert (routed.model, routed.candidates[0].reason, routed.notes) == (alias, reason, notes)


def test_a_task_may_map_to_the_auto_alias() -> None:
    config = seed_config(routing_rules={"tasks": {"chat": "auto"}})
    routed = route(chat("```\nx = 1\n```", metadata={"task": "chat"}), config)
    assert routed.candidates[0].reason == "auto: code (fenced block) -> code-local"


# --- auto routing ---------------------------------------------------------------------

AUTO = [
    ("Classify this as positive or negative: Great product!", 1, "fast-local", "simple"),
    ("Fix it:\n```python\nprint(1)\n```", 1, "code-local", "code (fenced block)"),
    ("def f(x):\n    return x", 1, "code-local", "code (def)"),
    ("Compare these two offers.", 1, "strong-local", "analysis (compare)"),
    (prose(3000), 1, "strong-local", "tokens > 2,000"),
    (prose(9000), 1, "cloud-strong", "tokens > 8,000"),
    ("Explain why this is slow: ```x()```", 5, "cloud-strong", "+ 5 messages"),
    ("Explain why this is slow: ```x()```", 4, "code-local", "code (fenced block)"),
]


@pytest.mark.parametrize(("text", "messages", "alias", "why"), AUTO)
def test_auto_routing_reproduces_the_seed(text: str, messages: int, alias: str, why: str) -> None:
    routed = route(chat(text, messages=messages), seed_config())
    assert routed.model == alias
    assert ids(routed)[0] == f"{alias}/0"
    reason = routed.candidates[0].reason
    assert reason.startswith("auto: ")
    assert why in reason
    assert reason.endswith(f"-> {alias}")


def test_a_configured_auto_alias_and_thresholds() -> None:
    config = seed_config(
        routing_rules={"auto": {"alias": "smart", "thresholds": {"strong_tokens": 5}}}
    )
    assert route(chat("hello there my friend", model="smart"), config).model == "strong-local"
    with pytest.raises(UnknownModel):
        route(chat(model="auto"), config)


def test_a_missing_tier_alias_uses_the_nearest_with_a_note() -> None:
    config = make_config(dep("fast-local"), dep("strong-local"))
    routed = route(chat("import os"), config)
    assert routed.model == "strong-local"
    assert routed.notes == ("auto: code-local is not configured: tier code uses strong-local",)


def test_auto_without_any_tier_alias_is_an_unknown_model() -> None:
    with pytest.raises(UnknownModel, match="unknown model 'auto'; known models: gpt"):
        route(chat(), make_config(dep("gpt")))


# --- context windows ------------------------------------------------------------------


def test_a_prompt_too_long_for_its_group_follows_the_context_fallbacks() -> None:
    routed = route(chat(prose(9000), model="fast-local"), seed_config())
    needed = routed.estimated_prompt_tokens + 256
    assert ids(routed) == ["strong-local/0"]
    assert routed.notes == (
        f"context {needed:,} > 8,192: skipped fast-local/0",
        "context fallback: fast-local -> strong-local",
    )
    assert routed.candidates[0].reason == "alias fast-local; context fallback -> strong-local"


def test_the_context_fallbacks_are_chained() -> None:
    routed = route(chat(prose(34_000), model="fast-local"), seed_config())
    assert ids(routed) == ["cloud-strong/0"]
    tokens = routed.estimated_prompt_tokens
    assert routed.notes == (
        f"context {tokens + 256:,} > 8,192: skipped fast-local/0",
        f"context {tokens + 256:,} > 32,768: skipped strong-local/0",
        "context fallback: fast-local -> cloud-strong",
    )


def test_nothing_fits_names_the_tokens_needed_and_the_largest_window() -> None:
    with pytest.raises(ContextWindowExceeded) as caught:
        route(chat(prose(200_000), model="fast-local"), seed_config())
    error = caught.value
    assert error.largest == 128_000
    assert error.needed > 200_000 * 0.8
    assert re.fullmatch(
        r"messages: the request needs about [\d,]+ tokens but the largest context window "
        r"available is 128,000",
        error.message,
    )


@pytest.mark.parametrize(
    ("max_tokens", "output", "fits"),
    [
        (4_000, 4_096, False),  # 5,000-ish + the 4,000 the request asks for > 8,192
        (100, 4_096, True),  # the request's own cap counts first
        # The deployment's default cap is a ceiling, not reserved: 256 tokens of room.
        (None, 8_192, True),
        (None, None, True),  # neither: the 256-token default
    ],
)
def test_the_output_room_counts(max_tokens: int | None, output: int | None, fits: bool) -> None:
    config = make_config(dep("m", window=8_192, output=output))
    request = chat(prose(5_000), model="m", max_tokens=max_tokens)
    if fits:
        assert ids(route(request, config)) == ["m/0"]
    else:
        with pytest.raises(ContextWindowExceeded):
            route(request, config)


def test_an_unknown_window_is_kept_and_checks_can_be_turned_off() -> None:
    request = chat(prose(20_000), model="m")
    assert ids(route(request, make_config(dep("m", window=None)))) == ["m/0"]
    off = make_config(dep("m", window=1_000), routing_rules={"context": {"checks": False}})
    assert ids(route(request, off)) == ["m/0"]


def test_only_the_deployments_that_cannot_hold_it_are_skipped() -> None:
    config = make_config(dep("m", 0, window=4_000), dep("m", 1, window=64_000))
    routed = route(chat(prose(5_000), model="m"), config)
    assert ids(routed) == ["m/1"]
    assert len(routed.notes) == 1
    assert routed.notes[0].endswith("skipped m/0")


# --- privacy --------------------------------------------------------------------------


def test_a_sensitive_request_keeps_only_local_deployments() -> None:
    config = make_config(dep("m", 0, locality=CLOUD), dep("m", 1), dep("m", 2, locality=CLOUD))
    routed = route(chat("card 4111 1111 1111 1111", model="m"), config)
    assert ids(routed) == ["m/1"]
    assert routed.sensitive
    assert routed.sensitive_reasons == ("card",)
    assert routed.notes == ("sensitive (card): cloud excluded",)
    assert len(route(chat("card 4111 1111 1111 1112", model="m"), config).candidates) == 3


def test_a_sensitive_request_to_a_cloud_alias_is_held_back() -> None:
    with pytest.raises(PrivacyBlocked) as caught:
        route(chat("Patient SSN 123-45-6789", model="cloud-strong"), seed_config())
    assert caught.value.message == (
        "request held back for privacy (medical, ssn): model 'cloud-strong' has no local deployment"
    )


def test_sensitive_auto_routing_picks_the_nearest_local_tier() -> None:
    routed = route(chat(prose(9_000) + " SSN 123-45-6789"), seed_config())
    assert routed.model == "strong-local"
    assert routed.candidates[0].reason.startswith("auto: ~")
    assert routed.notes == (
        "auto: cloud-strong has no local deployment: tier cloud uses strong-local",
        "sensitive (ssn): cloud excluded",
    )


def test_sensitive_auto_routing_without_any_local_tier_is_held_back() -> None:
    config = make_config(dep("cloud-strong", locality=CLOUD))
    assert route(chat("hello"), config).model == "cloud-strong"
    with pytest.raises(PrivacyBlocked) as caught:
        route(chat("SSN 123-45-6789"), config)
    assert caught.value.message == (
        "request held back for privacy (ssn): no alias of the auto tiers has a local deployment"
    )


def test_sensitive_and_too_long_for_every_local_window() -> None:
    config = make_config(
        dep("fast-local", window=8_192, output=1_000),
        dep("cloud-strong", locality=CLOUD, window=128_000),
        fallbacks={"fast-local": ("cloud-strong",)},
    )
    with pytest.raises(PrivacyBlocked) as caught:
        route(chat(prose(20_000), model="fast-local", local_only=True), config)
    assert re.fullmatch(
        r"request held back for privacy \(local_only\): no local deployment of 'fast-local' or "
        r"its context-window fallbacks can hold about [\d,]+ tokens \(largest local window "
        r"8,192\)",
        caught.value.message,
    )


@pytest.mark.parametrize(
    ("hints", "metadata", "means_local", "reasons", "no_fallback"),
    [
        ({"local_only": True}, {}, True, ("local_only",), False),
        ({}, {"no_fallback": "true"}, True, ("no_fallback",), True),
        ({}, {"no_fallback": "1"}, True, ("no_fallback",), True),
        ({}, {"no_fallback": " YES "}, True, ("no_fallback",), True),
        ({}, {"no_fallback": "false"}, True, (), False),
        ({"no_fallback": True}, {}, True, ("no_fallback",), True),
        ({"no_fallback": True}, {}, False, (), True),
        ({}, {"no_fallback": "true"}, False, (), True),
        ({"local_only": True, "no_fallback": True}, {}, True, ("local_only", "no_fallback"), True),
    ],
)
def test_caller_hints(
    hints: dict[str, bool],
    metadata: dict[str, str],
    means_local: bool,
    reasons: tuple[str, ...],
    no_fallback: bool,
) -> None:
    config = make_config(
        dep("m", 0), dep("m", 1, locality=CLOUD), privacy={"no_fallback_means_local": means_local}
    )
    request = ChatRequest(
        model="m",
        messages=(Message("user", "hello"),),
        metadata=metadata,
        hints=RoutingHints(**hints),
    )
    routed = route(request, config)
    assert routed.sensitive_reasons == reasons
    assert routed.sensitive is bool(reasons)
    assert routed.no_fallback is no_fallback
    assert len(routed.candidates) == (1 if reasons else 2)


def test_no_fallback_stays_in_the_group() -> None:
    config = seed_config(privacy={"no_fallback_means_local": False})
    with pytest.raises(ContextWindowExceeded):
        route(chat(prose(9000), model="fast-local", no_fallback=True), config)


def test_caller_hints_skip_the_detector_and_apply_with_the_detector_off() -> None:
    config = make_config(dep("m", 0), dep("m", 1, locality=CLOUD), privacy={"enabled": False})
    assert not route(chat("SSN 123-45-6789", model="m"), config).sensitive
    routed = route(chat("SSN 123-45-6789", model="m", local_only=True), config)
    assert routed.sensitive_reasons == ("local_only",)
    assert ids(routed) == ["m/0"]


def test_tool_call_arguments_are_scanned() -> None:
    config = make_config(dep("m", 0), dep("m", 1, locality=CLOUD))
    call = ToolCall(id="c1", name="lookup", arguments='{"ssn": "123-45-6789"}')
    request = ChatRequest(
        model="m",
        messages=(Message("user", "look them up"), Message("assistant", tool_calls=(call,))),
    )
    assert route(request, config).sensitive_reasons == ("ssn",)


# --- health ---------------------------------------------------------------------------


class Health:
    def __init__(
        self,
        down: set[str],
        busy: dict[str, int] | None = None,
        ttft: dict[str, float] | None = None,
        left: dict[str, float] | None = None,
    ) -> None:
        self.down = down
        self.busy = busy or {}
        self.ttfts = ttft or {}
        self.left = left or {}

    def is_available(self, deployment_id: str) -> bool:
        return deployment_id not in self.down

    def in_flight(self, deployment_id: str) -> int:
        return self.busy.get(deployment_id, 0)

    def ttft(self, deployment_id: str) -> float | None:
        return self.ttfts.get(deployment_id)

    def cooldown_left(self, deployment_id: str) -> float:
        return self.left.get(deployment_id, 1.0 if deployment_id in self.down else 0.0)


def test_unhealthy_deployments_are_tried_last() -> None:
    config = make_config(dep("m", 0), dep("m", 1), dep("m", 2))
    policy = compile_routing(config)
    routed = plan(chat(model="m"), config, policy, Health({"m/0", "m/1"}), rand=lambda: 0.5)
    assert ids(routed)[0] == "m/2"
    assert set(ids(routed)[1:]) == {"m/0", "m/1"}
    assert routed.notes[-1].startswith("unhealthy, tried last: ")
    everyone_up = plan(chat(model="m"), config, policy, Health(set()))
    assert everyone_up.notes == ()


# --- the privacy invariant, whatever the configuration ---------------------------------

GROUPS = ("fast-local", "strong-local", "code-local", "cloud-strong", "g1", "g2")
SENSITIVE_TEXTS = (
    "SSN 123-45-6789",
    "pay with 4111 1111 1111 1111",
    "IBAN DE89 3704 0044 0532 0130 00",
    "passport AB1234567",
    "the patient's medical record",
    "under NDA",
)


@st.composite
def configs(draw: st.DrawFn) -> SidecarConfig:
    deployments: list[Deployment] = []
    for name in draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=5, unique=True)):
        for index in range(draw(st.integers(1, 3))):
            deployments.append(
                dep(
                    name,
                    index,
                    locality=draw(st.sampled_from([LOCAL, CLOUD])),
                    window=draw(st.one_of(st.none(), st.integers(50, 200_000))),
                    output=draw(st.one_of(st.none(), st.integers(1, 20_000))),
                    weight=draw(st.floats(0.1, 5.0)),
                )
            )
    names = sorted({d.model_group for d in deployments})
    fallbacks = draw(
        st.dictionaries(
            st.sampled_from(names), st.lists(st.sampled_from(names), max_size=3).map(tuple)
        )
    )
    tiers = draw(
        st.dictionaries(
            st.sampled_from(["fast", "strong", "code", "cloud"]), st.sampled_from(names)
        )
    )
    return make_config(
        *deployments,
        fallbacks=fallbacks,
        routing_rules={"auto": {"tiers": tiers}},
        # The Python engine: a Hyperscan database per example would be slow to build,
        # and the engines' agreement is tested in test_routing_privacy.py.
        privacy={"no_fallback_means_local": draw(st.booleans()), "engine": "python"},
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs(),
    data=st.data(),
    sensitive=st.sampled_from((*SENSITIVE_TEXTS, "<local_only>")),
    size=st.sampled_from([1, 500, 5_000, 40_000]),
    position=st.floats(0, 1),
)
def test_a_sensitive_request_never_plans_a_cloud_deployment(
    config: SidecarConfig, data: st.DataObject, sensitive: str, size: int, position: float
) -> None:
    model = data.draw(st.sampled_from([*config.groups, "auto", ""]))
    body = prose(size)
    cut = int(len(body) * position)
    local_only = sensitive == "<local_only>"
    text = body if local_only else body[:cut] + " " + sensitive + " " + body[cut:]
    down = data.draw(st.sets(st.sampled_from([d.id for d in config.deployments])))
    request = chat(
        text,
        model=model,
        messages=data.draw(st.integers(1, 6)),
        metadata={"task": data.draw(st.sampled_from(["", "classify"]))},
        local_only=local_only,
        max_tokens=data.draw(st.one_of(st.none(), st.integers(1, 10_000))),
    )
    try:
        routed = plan(request, config, compile_routing(config), Health(down))
    except (PrivacyBlocked, ContextWindowExceeded, UnknownModel):
        return
    assert routed.sensitive
    assert routed.sensitive_reasons
    assert routed.candidates
    assert all(c.deployment.locality is LOCAL for c in routed.candidates)


# --- failure fallbacks, retries and balancing -----------------------------------------


def _with(config: SidecarConfig, **changes: Any) -> SidecarConfig:
    return dataclasses.replace(config, **changes)


def test_failure_fallbacks_follow_the_group_then_the_default() -> None:
    base = make_config(dep("fast"), dep("strong"), dep("cloud", locality=CLOUD))
    config = _with(
        base,
        litellm_settings=LitellmSettings(
            fallbacks={"fast": ("strong",)}, default_fallbacks=("cloud",)
        ),
    )
    policy = compile_routing(config)
    assert ids(plan(chat(model="fast"), config, policy)) == ["fast/0", "strong/0"]
    # A group without its own fallbacks takes the default ones.
    assert ids(plan(chat(model="strong"), config, policy)) == ["strong/0", "cloud/0"]
    routed = plan(chat(model="fast", no_fallback=True), config, policy)
    assert ids(routed) == ["fast/0"]


def test_retry_policy_fallbacks_and_retries_win() -> None:
    base = make_config(dep("fast"), dep("strong"), dep("cloud", locality=CLOUD))
    config = _with(
        base,
        litellm_settings=LitellmSettings(fallbacks={"fast": ("strong",)}),
        router_settings=RouterSettings(
            model_group_retry_policy={"fast": RetryPolicy(num_retries=1, fallbacks=("cloud",))}
        ),
    )
    routed = plan(chat(model="fast"), config, compile_routing(config))
    assert ids(routed) == ["fast/0", "fast/0", "cloud/0"]
    assert [c.reason for c in routed.candidates][1:] == [
        "alias fast; retry 1",
        "fallback fast -> cloud",
    ]


def test_sensitive_requests_never_fall_back_to_cloud() -> None:
    base = make_config(dep("fast"), dep("cloud", locality=CLOUD))
    config = _with(base, litellm_settings=LitellmSettings(default_fallbacks=("cloud",)))
    routed = plan(chat(model="fast", local_only=True), config, compile_routing(config))
    assert ids(routed) == ["fast/0"]


def test_pre_call_checks_leave_unhealthy_deployments_out() -> None:
    base = make_config(dep("m", 0), dep("m", 1))
    config = _with(base, router_settings=RouterSettings(enable_pre_call_checks=True))
    routed = plan(chat(model="m"), config, compile_routing(config), Health({"m/0"}))
    assert ids(routed) == ["m/1"]
    assert routed.notes[-1] == "pre-call checks: left out unhealthy m/0"


def test_least_busy_prefers_fewest_in_flight() -> None:
    base = make_config(dep("m", 0), dep("m", 1), dep("m", 2))
    config = _with(base, router_settings=RouterSettings(routing_strategy="least-busy"))
    health = Health(set(), busy={"m/0": 3, "m/1": 0, "m/2": 1})
    assert ids(plan(chat(model="m"), config, compile_routing(config), health)) == [
        "m/1",
        "m/2",
        "m/0",
    ]


def test_latency_based_prefers_fastest_and_still_explores() -> None:
    base = make_config(dep("m", 0), dep("m", 1))
    config = _with(base, router_settings=RouterSettings(routing_strategy="latency-based-routing"))
    policy = compile_routing(config)
    health = Health(set(), ttft={"m/0": 0.5, "m/1": 0.05})
    assert ids(plan(chat(model="m"), config, policy, health, rand=lambda: 0.5))[0] == "m/1"
    # A draw under the exploration share shuffles instead, here putting the slow one first.
    draws = iter([0.01, 0.9, 0.1])
    explored = plan(chat(model="m"), config, policy, health, rand=lambda: next(draws))
    assert ids(explored)[0] == "m/0"


# --- never fail without trying: the panic threshold -----------------------------------


def test_every_candidate_unhealthy_is_tried_anyway_soonest_to_recover_first() -> None:
    config = make_config(dep("m", 0), dep("m", 1), dep("m", 2))
    health = Health({"m/0", "m/1", "m/2"}, left={"m/0": 30.0, "m/1": 2.0, "m/2": 9.0})
    routed = plan(chat(model="m"), config, compile_routing(config), health)
    assert ids(routed) == ["m/1", "m/2", "m/0"]
    assert routed.despite_health == {"m/0", "m/1", "m/2"}
    assert "panic: 0 of 3 healthy, under the 50% threshold" in routed.notes[-1]


def test_under_the_threshold_the_unhealthy_are_tried_after_the_healthy() -> None:
    config = make_config(dep("m", 0), dep("m", 1), dep("m", 2))
    routed = plan(chat(model="m"), config, compile_routing(config), Health({"m/0", "m/1"}))
    assert ids(routed)[0] == "m/2"
    assert routed.despite_health == {"m/0", "m/1"}
    # At or above the threshold the unhealthy stay last, and are skipped while cooling.
    lower = _with(config, health=dataclasses.replace(config.health, panic_threshold=0.3))
    calm = plan(chat(model="m"), lower, compile_routing(lower), Health({"m/0", "m/1"}))
    assert ids(calm)[0] == "m/2"
    assert calm.despite_health == frozenset()


def test_panic_threshold_zero_turns_it_off() -> None:
    base = make_config(dep("m", 0), dep("m", 1))
    config = _with(base, health=dataclasses.replace(base.health, panic_threshold=0.0))
    routed = plan(chat(model="m"), config, compile_routing(config), Health({"m/0", "m/1"}))
    assert routed.despite_health == frozenset()
    assert routed.notes[-1] == "unhealthy, tried last: m/0, m/1"


def test_panic_overrides_pre_call_checks() -> None:
    base = make_config(dep("m", 0), dep("m", 1), dep("m", 2))
    config = _with(base, router_settings=RouterSettings(enable_pre_call_checks=True))
    routed = plan(chat(model="m"), config, compile_routing(config), Health({"m/0", "m/1"}))
    assert ids(routed)[0] == "m/2"
    assert set(ids(routed)) == {"m/0", "m/1", "m/2"}
    assert routed.despite_health == {"m/0", "m/1"}


def test_sensitive_request_whose_only_local_deployment_is_cooling_is_tried_there() -> None:
    base = make_config(dep("fast"), dep("cloud", locality=CLOUD))
    config = _with(base, litellm_settings=LitellmSettings(default_fallbacks=("cloud",)))
    routed = plan(
        chat(model="fast", local_only=True), config, compile_routing(config), Health({"fast/0"})
    )
    assert ids(routed) == ["fast/0"]
    assert routed.despite_health == {"fast/0"}
    # Not sensitive, the healthy cloud fallback is half the plan: no panic, cloud first.
    benign = plan(chat(model="fast"), config, compile_routing(config), Health({"fast/0"}))
    assert ids(benign) == ["cloud/0", "fast/0"]
    assert benign.despite_health == frozenset()
