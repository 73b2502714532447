"""Checks a canonical request once, where it enters the engine."""

from __future__ import annotations

from sidecar.errors import InvalidRequest
from sidecar.redaction import shown
from sidecar.types import ROLES, ChatRequest


def validate_request(request: ChatRequest) -> None:
    """Raise InvalidRequest naming the first field that is wrong."""
    if not request.model:
        raise InvalidRequest("model", "required")
    if not request.messages:
        raise InvalidRequest("messages", "at least one message is required")
    for i, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role",
                f"{shown(message.role)} is not one of {', '.join(sorted(ROLES))}",
            )
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidRequest(f"messages[{i}].tool_call_id", "required on a tool message")
    params = request.params
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequest("max_tokens", f"must be at least 1, got {params.max_tokens}")
    if params.temperature is not None and not 0.0 <= params.temperature <= 2.0:
        raise InvalidRequest("temperature", f"must be between 0 and 2, got {params.temperature}")
    if params.top_p is not None and not 0.0 <= params.top_p <= 1.0:
        raise InvalidRequest("top_p", f"must be between 0 and 1, got {params.top_p}")
    if len(params.stop) > 16:
        raise InvalidRequest("stop", f"at most 16 stop sequences, got {len(params.stop)}")
