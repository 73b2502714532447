"""The engine: plans each call, runs it through the one egress, and relays the answer.

Front doors use only what this package exports.
"""

from sidecar.engine.engine import Engine
from sidecar.engine.stream import ChatStream
from sidecar.routing import Candidate, RoutePlan, estimate_tokens

__all__ = ["Candidate", "ChatStream", "Engine", "RoutePlan", "estimate_tokens"]
