"""What one finished call reports to telemetry: built once, at the end of the call."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.types import RouteTaken, Usage


@dataclass(slots=True)
class CallReport:
    """One call, as metrics, the call span and the call log line see it.

    Times are seconds. `overhead` is the sidecar's own share before the answer
    started: from the call's arrival to the request going out to the deployment
    that answered. `relay_overhead` is the time the relay held the answer beyond
    waiting on the upstream (with the caller reading at the same time: a slow
    reader shows up here too).
    """

    request_id: str
    model: str  # the alias the caller asked for
    route: RouteTaken | None  # None when no deployment answered
    outcome: str  # ok | error | cancelled | rejected
    started: float  # unix seconds
    duration: float
    ttft: float | None = None
    usage: Usage | None = None
    cost: float = 0.0  # USD, every attempt's settlement added up
    error_type: str | None = None  # a low-cardinality code: the error's ErrorCode name
    reason: str = ""  # why the plan had the deployment that answered
    attempts: int = 0
    fallbacks: int = 0  # attempts on another model group than the one asked for
    retries: int = 0  # further attempts on the group asked for
    hedges: int = 0  # attempts started while another was still waiting
    hedge_won: bool = False  # the answer came from a hedge
    sensitive: bool = False  # the privacy verdict: held to local deployments
    budget_refused: bool = False  # a cap turned an attempt away
    privacy_refused: bool = False  # an attempt was refused for privacy at the egress
    overhead: float | None = None
    relay_overhead: float | None = None
    finish_reason: str | None = None
    streaming: bool = True
    task: str = ""  # the caller's task tag, if any
    operation: str = "chat"  # gen_ai.operation.name: chat, text_completion or embeddings
