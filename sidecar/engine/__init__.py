"""The engine: plans each call, runs it through the one egress, and relays the answer.

Front doors use only what this package exports.
"""

from sidecar.engine.engine import Engine
from sidecar.engine.stream import ChatStream
from sidecar.routing import Candidate, RoutePlan, estimate_tokens

# Front doors continue a caller's W3C trace context (traceparent) around a call with it.
from sidecar.telemetry.tracing import continued as continue_trace

__all__ = ["Candidate", "ChatStream", "Engine", "RoutePlan", "continue_trace", "estimate_tokens"]
