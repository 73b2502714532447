"""The most a call can cost, computed before it is sent.

A reservation must cover whatever the provider may bill, or concurrent calls could
together pass a cap. So the prompt side is an upper bound rather than the routing
estimate: a tokenizer never makes more tokens than the text has UTF-8 bytes, plus the
chat format's few tokens per message, a fixed allowance per image and per tool. The
answer side is the room the call may use: the caller's max_tokens, else the deployment's
default cap, else the model's own output limit, else the configured default; when the
caller set no limit, the egress sends that room upstream as max_tokens so the bound holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from sidecar.budget.prices import Price
from sidecar.config.model import Deployment
from sidecar.types import ChatRequest

# Generous per-item allowances: role and delimiters per message, one high-detail image
# tile set, one tool's wrapping text.
_PER_MESSAGE = 8
_PER_REQUEST = 8
_PER_IMAGE = 2000
_PER_TOOL = 64
_BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class WorstCase:
    prompt_bound: int  # at most this many prompt tokens
    prompt_estimate: int  # the likely prompt size, to charge a call cut short
    answer_room: int  # at most this many completion tokens
    limit_upstream: bool  # the request sets no output limit: send answer_room as max_tokens


def worst_case(
    deployment: Deployment, request: ChatRequest, price: Price, default: int
) -> WorstCase:
    bound = _PER_REQUEST
    text = 0
    for message in request.messages:
        size = _bytes(message.content) + _bytes(message.name)
        for call in message.tool_calls:
            size += _PER_MESSAGE + _bytes(call.name) + _bytes(call.arguments)
        text += size
        bound += _PER_MESSAGE + size + _PER_IMAGE * len(message.images)
    if request.extra:
        bound += len(orjson.dumps(request.extra))
        tools = request.extra.get("tools")
        if isinstance(tools, list):
            bound += _PER_TOOL * len(tools)
    requested = request.params.max_tokens or deployment.max_output_tokens
    room = requested or price.max_output or default
    # About four bytes of text per token: what a call cut short is charged for its prompt.
    estimate = min(bound, text // _BYTES_PER_TOKEN + bound - text)
    return WorstCase(bound, estimate, room, requested is None)


def _bytes(text: str) -> int:
    if not text:
        return 0
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
