"""One embedding call: planned like a chat, tried candidate by candidate through the egress.

The plan is the chat plan of a stand-in request, so aliases, groups, retries,
fallbacks, health, budgets and the privacy rule apply unchanged:

- the privacy detector reads every input of the batch, and one sensitive input (or
  any token-id input, which the detector cannot read) makes the whole batch local;
- context and budget checks see the longest input, since an embedding model's
  window bounds each input, not the batch; the egress still reserves the whole
  batch's worst case before a cloud call.

An embedding answer arrives whole, so any failure moves on to the next candidate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from sidecar.budget import Budgets, caller_of
from sidecar.clock import Clock, timeout_at
from sidecar.config.model import Deployment
from sidecar.engine.egress import Egress
from sidecar.engine.stream import no_answer, route_taken
from sidecar.errors import (
    BudgetRefused,
    InvalidRequest,
    LedgerUnavailable,
    PrivacyBlocked,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    timed_out,
)
from sidecar.health import HealthTracker
from sidecar.routing import RoutePlan
from sidecar.telemetry import CallReport, Telemetry
from sidecar.types import (
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    GenerationParams,
    Message,
    SpendRecord,
    Usage,
)

log = logging.getLogger("sidecar.engine.embedding")

# What one batch may hold: OpenAI's own limit on inputs per request.
MAX_INPUTS = 2048


def validate_embedding(request: EmbeddingRequest) -> None:
    """Raise InvalidRequest naming the first field that is wrong."""
    if not request.model:
        raise InvalidRequest("model", "required")
    if not request.inputs:
        raise InvalidRequest("input", "at least one input is required")
    if len(request.inputs) > MAX_INPUTS:
        raise InvalidRequest("input", f"at most {MAX_INPUTS} inputs, got {len(request.inputs)}")
    for i, item in enumerate(request.inputs):
        if not item:
            raise InvalidRequest(f"input[{i}]", "must not be empty")
    if request.dimensions is not None and request.dimensions < 1:
        raise InvalidRequest("dimensions", f"must be at least 1, got {request.dimensions}")


def planning_request(request: EmbeddingRequest, sensitive: tuple[str, ...]) -> ChatRequest:
    """The stand-in chat the router plans: the longest input, marked local-only when the
    batch holds something sensitive (`sensitive` names why) or unreadable."""
    local_only = request.hints.local_only or bool(sensitive) or request.has_tokens
    longest = max(request.texts, key=len, default="")
    return ChatRequest(
        model=request.model,
        messages=(Message("user", longest),),
        params=GenerationParams(max_tokens=1),
        metadata=request.metadata,
        hints=dataclasses.replace(request.hints, local_only=local_only),
        request_id=request.request_id,
    )


def priced_request(request: EmbeddingRequest) -> ChatRequest:
    """The whole batch as the budgets price it: every input a prompt, one answer token."""
    tokens = sum(len(item) for item in request.inputs if not isinstance(item, str))
    messages = tuple(Message("user", text) for text in request.texts)
    if tokens:
        # A token id is at most a few bytes of text: price each as four.
        messages += (Message("user", "x" * (4 * tokens)),)
    return ChatRequest(
        model=request.model,
        messages=messages,
        params=GenerationParams(max_tokens=1),
        metadata=request.metadata,
        request_id=request.request_id,
    )


@dataclass(frozen=True, slots=True)
class EmbedServices:
    egress: Egress
    health: HealthTracker
    clock: Clock
    telemetry: Telemetry
    budgets: Budgets | None = None


class EmbedCall:
    """Walks the plan until a candidate embeds the batch."""

    def __init__(
        self,
        services: EmbedServices,
        request: EmbeddingRequest,
        route_plan: RoutePlan,
        deadline: float | None,
    ) -> None:
        self._services = services
        self._request = request
        self._plan = route_plan
        self._deadline = deadline
        self._priced = priced_request(request)
        self._failures: list[UpstreamError] = []
        self._settlements: list[asyncio.Task[float]] = []
        self._attempts = 0
        self._outcome = "cancelled"  # until the call ends otherwise

    async def run(self) -> EmbeddingResponse:
        clock = self._services.clock
        started = clock.now()
        started_wall = self._wall()
        answer: EmbeddingResponse | None = None
        reason = ""
        try:
            for candidate in self._plan.candidates:
                if self._deadline is not None and clock.now() >= self._deadline:
                    self._failures.append(
                        UpstreamTimeout(candidate.deployment.id, "the caller's deadline passed")
                    )
                    break
                answer = await self._try(candidate.deployment)
                if answer is not None:
                    reason = candidate.reason
                    self._outcome = "ok"
                    return answer
            self._outcome = "error"
            raise no_answer(self._plan, self._failures)
        finally:
            self._record(answer, started, started_wall, reason)

    async def _try(self, deployment: Deployment) -> EmbeddingResponse | None:
        services = self._services
        health, clock = services.health, services.clock
        if (
            not health.is_available(deployment.id)
            and deployment.id not in self._plan.despite_health
        ):
            reason = health[deployment.id].reason
            self._failures.append(UpstreamUnavailable(deployment.id, f"cooling down ({reason})"))
            return None
        self._attempts += 1
        health.begin(deployment.id)
        started = clock.now()
        end = started + deployment.timeouts.total
        if self._deadline is not None:
            end = min(end, self._deadline)
        try:
            async with timeout_at(clock, end):
                answer, settlement = await services.egress.embed(
                    deployment,
                    self._request,
                    self._priced,
                    sensitive=self._plan.sensitive,
                    lifetime=end - started,
                )
        except PrivacyBlocked as exc:
            log.error("%s", exc.message)
            return None
        except (BudgetRefused, LedgerUnavailable) as exc:
            self._failures.append(exc)
            log.info("attempt on %s not made: %s", deployment.id, exc.message)
            return None
        except TimeoutError:
            callers = self._deadline is not None and clock.now() >= self._deadline
            problem = (
                "the caller's deadline passed before the embeddings came"
                if callers
                else f"no embeddings within {deployment.timeouts.total:g}s"
            )
            self._failed(timed_out(deployment.id, problem, callers=callers))
            return None
        except UpstreamError as exc:
            self._failed(exc)
            return None
        finally:
            health.end(deployment.id)
        health.succeeded(deployment.id, clock.now() - started)
        if settlement is not None:
            self._settlements.append(settlement)
        route = route_taken(deployment, self._attempts, self._request.request_id)
        return EmbeddingResponse(answer.vectors, answer.usage, route)

    def _failed(self, failure: UpstreamError) -> None:
        self._services.health.failed_with(failure)
        self._failures.append(failure)
        log.warning("embedding attempt failed: %s", failure.message)

    def _wall(self) -> float:
        budgets = self._services.budgets
        return budgets.wall() if budgets is not None else 0.0

    def _record(
        self, answer: EmbeddingResponse | None, started: float, started_wall: float, reason: str
    ) -> None:
        """Telemetry and the spend record, once per call, off the caller's path."""
        services = self._services
        route = None if answer is None else answer.route
        outcome = self._outcome
        usage = Usage() if answer is None else answer.usage
        latency = services.clock.now() - started
        services.telemetry.call_ended(
            CallReport(
                self._request.request_id,
                self._plan.model,
                route,
                outcome,
                started_wall,
                latency,
                usage=None if answer is None else usage,
                reason=reason,
                attempts=self._attempts,
                sensitive=self._plan.sensitive,
                streaming=False,
                operation="embeddings",
            )
        )
        budgets = services.budgets
        if budgets is None:
            return
        record = SpendRecord(
            request_id=self._request.request_id,
            start_time=started_wall,
            end_time=budgets.wall(),
            caller=caller_of(self._priced),
            model_group=self._plan.model,
            model=route.upstream_model if route is not None else "",
            deployment=route.deployment if route is not None else "",
            provider=route.provider if route is not None else "",
            locality=route.locality.value if route is not None else "",
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=0,
            cached_tokens=0,
            cost=0.0,
            ttft_ms=None,
            latency_ms=latency * 1000,
            status=outcome,
            attempts=self._attempts,
            fallbacks=max(0, self._attempts - 1),
            route_reason=reason,
        )

        async def save(cost: float) -> None:
            await budgets.record(dataclasses.replace(record, cost=cost))

        services.egress.after(self._settlements, save)
