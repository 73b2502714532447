"""plan(): requests with tools keep to deployments that can call them, and a request
carrying signed thinking keeps to the provider family that can read it."""

from __future__ import annotations

import dataclasses
from typing import Any

import openai
import pytest

from sidecar.config.loader import parse_config
from sidecar.config.model import Deployment, LitellmSettings, ProviderKind, SidecarConfig
from sidecar.errors import InvalidRequest
from sidecar.simulate import OllamaSimulator
from sidecar.types import ChatRequest, Message, RoutingHints, ThinkingBlock, ToolCall
from tests import harness
from tests.bridge_harness import running_bridge
from tests.test_routing_plan import CLOUD, dep, ids, make_config, route

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
TOOLS_PARAM: Any = TOOLS


def _no_tools(deployment: Deployment) -> Deployment:
    return dataclasses.replace(deployment, supports_tools=False)


def _with_fallbacks(config: SidecarConfig, **chains: tuple[str, ...]) -> SidecarConfig:
    settings = LitellmSettings(fallbacks={k.replace("_", "-"): v for k, v in chains.items()})
    return dataclasses.replace(config, litellm_settings=settings)


def _tools_request(model: str, no_fallback: bool = False) -> ChatRequest:
    return ChatRequest(
        model,
        (Message("user", "Look Lima up."),),
        extra={"tools": TOOLS},
        hints=RoutingHints(no_fallback=no_fallback),
    )


def test_deployments_that_cannot_call_tools_are_skipped() -> None:
    config = make_config(_no_tools(dep("small", 0)), dep("small", 1))
    routed = route(_tools_request("small"), config)
    assert ids(routed) == ["small/1"]
    assert "tools: skipped small/0 (it cannot call tools)" in routed.notes
    # Without tools the same deployment is as good as any.
    plain = ChatRequest("small", (Message("user", "hi"),))
    assert sorted(ids(route(plain, config))) == ["small/0", "small/1"]


def test_a_fallback_takes_what_the_group_cannot() -> None:
    config = _with_fallbacks(
        make_config(_no_tools(dep("small")), dep("big", locality=CLOUD)), small=("big",)
    )
    routed = route(_tools_request("small"), config)
    assert ids(routed) == ["big/0"]
    assert routed.candidates[0].reason == "fallback small -> big"


@pytest.mark.parametrize("no_fallback", [False, True])
def test_no_deployment_that_can_call_tools_is_a_clear_400(no_fallback: bool) -> None:
    config = _with_fallbacks(
        make_config(_no_tools(dep("small")), _no_tools(dep("other"))), small=("other",)
    )
    with pytest.raises(InvalidRequest) as raised:
        route(_tools_request("small", no_fallback), config)
    assert raised.value.field == "tools"
    assert "'small' cannot call tools" in raised.value.message
    assert "supports_function_calling" in raised.value.message


def test_model_info_declares_it() -> None:
    entry = {
        "model_name": "small",
        "litellm_params": {"model": "ollama/tiny"},
        "model_info": {"supports_function_calling": False},
    }
    config = parse_config({"model_list": [entry]}, source="test", env={})
    assert not config.groups["small"].deployments[0].supports_tools
    entry["model_info"] = {}
    config = parse_config({"model_list": [entry]}, source="test", env={})
    assert config.groups["small"].deployments[0].supports_tools


def _provider(deployment: Deployment, kind: ProviderKind) -> Deployment:
    return dataclasses.replace(deployment, provider=kind)


def _loop(thinking: tuple[ThinkingBlock, ...]) -> ChatRequest:
    call = ToolCall("call_1", "lookup", '{"city":"Lima"}')
    return ChatRequest(
        "claude",
        (
            Message("user", "Look Lima up."),
            Message("assistant", tool_calls=(call,), thinking=thinking),
            Message("tool", "9M", tool_call_id="call_1"),
        ),
        extra={"tools": TOOLS},
    )


@pytest.mark.parametrize(
    "thinking",
    [(ThinkingBlock("Let me see.", "c2ln"),), (ThinkingBlock(redacted="b3BhcXVl"),)],
    ids=["signed", "redacted"],
)
def test_signed_thinking_keeps_to_its_provider_family(thinking: tuple[ThinkingBlock, ...]) -> None:
    config = _with_fallbacks(
        make_config(
            _provider(dep("claude", 0, locality=CLOUD), ProviderKind.ANTHROPIC),
            _provider(dep("claude-backup", 0, locality=CLOUD), ProviderKind.ANTHROPIC),
            _provider(dep("gemini", 0, locality=CLOUD), ProviderKind.GEMINI),
            dep("local"),
        ),
        claude=("gemini", "claude-backup", "local"),
    )
    routed = route(_loop(thinking), config)
    assert ids(routed) == ["claude/0", "claude-backup/0"]
    assert "signed thinking: kept to anthropic deployments, left out gemini/0, local/0" in (
        routed.notes
    )
    # The same loop without signed thinking may go anywhere its fallbacks lead.
    unsigned = route(_loop((ThinkingBlock("Let me see."),)), config)
    assert ids(unsigned) == ["claude/0", "gemini/0", "claude-backup/0", "local/0"]


async def test_through_the_bridge_tools_a_model_cannot_call_are_a_400(
    ollama: OllamaSimulator,
) -> None:
    info = {"supports_function_calling": False}
    config = harness.make_config(
        [("tiny", "ollama/tiny", {"api_base": ollama.base_url, "model_info": info})],
        general_settings={"master_key": "sk-master"},
    )
    async with (
        running_bridge(config, "in-process") as bridge,
        bridge.client(api_key="sk-master") as client,
    ):
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], tools=TOOLS_PARAM
            )
        assert "cannot call tools" in err.value.message
        answer = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
    assert ollama.stats.requests == 1  # the request with tools never reached it
