"""What a call notes for telemetry as it goes (attempts, hedges, refusals, timings),
beyond what the call itself keeps; turned into one CallReport when it ends."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Span

from sidecar.config.model import Deployment
from sidecar.errors import SidecarError
from sidecar.telemetry.tracing import end_attempt


def end_span(span: Span | None, failure: SidecarError | str | None) -> None:
    if span is not None:
        end_attempt(span, failure.code.name if isinstance(failure, SidecarError) else failure)


@dataclass(slots=True)
class Observed:
    """What telemetry wants to know about a call beyond what the call itself keeps."""

    arrived: float  # clock time the engine got the call
    first_sent: float | None = None  # clock time the first attempt went out
    committed: float | None = None  # clock time the first chunk was handed on
    waited: float = 0.0  # seconds spent waiting on the upstream after the first chunk
    fallbacks: int = 0
    retries: int = 0
    hedges: int = 0
    hedge_won: bool = False
    budget_refused: bool = False
    privacy_refused: bool = False
    finish: str | None = None
    error: str | None = None
    attempt_span: Span | None = None  # the answering attempt's span until it ends

    def attempted(self, deployment: Deployment, model: str, number: int) -> None:
        if deployment.model_group != model:
            self.fallbacks += 1
        elif number > 1:
            self.retries += 1
