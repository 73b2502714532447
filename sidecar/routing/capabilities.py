"""What a request needs of a deployment beyond room for its prompt: tool calling, and
the provider that can read the signed thinking it carries back.

Tools. A request with tools goes only to deployments that can call them; a deployment
says it cannot with LiteLLM's `model_info.supports_function_calling: false`. When a
group has none left, its failure fallbacks may still take the request; when nothing
can, the call is refused with a 400 naming the problem instead of reaching a model that
would ignore the tools (or fail on them).

Signed thinking. A tool loop with extended thinking carries the model's thinking
blocks back, signed by the provider that wrote them (Anthropic's `thinking` signatures,
Gemini's `thoughtSignature`). Another family cannot read them: Anthropic and Gemini
refuse a signature they did not issue with a 400, and the others drop the blocks and
answer without the reasoning the loop was built on. So a request carrying signed
thinking stays with the provider family of the first deployment its plan chose (the
alias that answered the previous turn): retries and fallbacks of the same provider are
kept, in order, and those of another are left out, with a note in the plan.
"""

from __future__ import annotations

from sidecar.config.model import Deployment, ProviderKind
from sidecar.types import ChatRequest


def wants_tools(request: ChatRequest) -> bool:
    tools = request.extra.get("tools")
    return isinstance(tools, list) and bool(tools)


def can_call_tools(deployment: Deployment) -> bool:
    return deployment.supports_tools


def carries_signed_thinking(request: ChatRequest) -> bool:
    """True when an assistant turn brings back thinking its provider signed."""
    return any(
        block.signature or block.redacted
        for message in request.messages
        if message.role == "assistant"
        for block in message.thinking
    )


def family(deployment: Deployment) -> ProviderKind:
    """The provider family that signs and reads a deployment's thinking."""
    return deployment.provider
