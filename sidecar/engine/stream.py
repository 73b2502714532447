"""One call in progress: walk the plan to a first token, then relay.

For each candidate of the plan the call opens the upstream stream and waits
for the first token under a deadline. Any failure before that token moves on
to the next candidate (or, with hedging, races the next one); after it, the
stream is committed and a failure ends the call with an error, never with a
silent switch or a clean-looking truncation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from opentelemetry.trace import Span

from sidecar.budget import Budgets, caller_of
from sidecar.clock import Clock, alarm, timeout_at
from sidecar.config.model import Deployment
from sidecar.engine.egress import Attempt, Chunks, Egress
from sidecar.engine.observed import Observed, end_span
from sidecar.engine.watchdog import Watchdog
from sidecar.errors import (
    BudgetRefused,
    LedgerUnavailable,
    NoDeploymentAvailable,
    PrivacyBlocked,
    SidecarError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamUnavailable,
    timed_out,
)
from sidecar.health import HealthTracker
from sidecar.quality import ShadowSampler
from sidecar.routing import Candidate, Hedge, RoutePlan
from sidecar.telemetry import CallReport, Telemetry
from sidecar.telemetry.tracing import current
from sidecar.types import ChatRequest, Chunk, Locality, RouteTaken, SpendRecord, Usage

log = logging.getLogger("sidecar.engine.stream")


@dataclass(frozen=True, slots=True)
class CallServices:
    """What a call needs from the engine, which owns all of it."""

    egress: Egress
    health: HealthTracker
    clock: Clock
    telemetry: Telemetry
    queue_timeout: float  # how long a call may wait for a slot on a busy last candidate
    budgets: Budgets | None = None  # spend records go to its log
    quality: ShadowSampler | None = None  # shadow sampling of locally served calls


@dataclass(slots=True)
class _Opened:
    """An attempt that produced its first chunk."""

    deployment: Deployment
    attempt: Attempt
    first: Chunk
    end: float | None  # clock time by which the whole call must be over
    ttft: float  # seconds from sending the request to its first chunk
    reason: str  # why the plan had this candidate
    span: Span | None  # the attempt's span, when tracing
    hedge: bool  # started while another attempt was still waiting


class ChatStream:
    """One call in progress: iterate it for chunks; `route` is set with the first."""

    def __init__(
        self,
        services: CallServices,
        request: ChatRequest,
        route_plan: RoutePlan,
        deadline: float | None,
        arrived: float | None = None,
    ) -> None:
        """`arrived` is the clock time the engine got the call, before planning."""
        self._services = services
        self._health = services.health
        self._clock = services.clock
        self._request = request
        self.plan = route_plan
        self._deadline = deadline  # clock time, None when the caller set no deadline
        self._attempt: Attempt | None = None
        self._upstream: Chunks | None = None  # the committed attempt's chunks
        self._deployment: Deployment | None = None
        self._watchdog: Watchdog | None = None
        self._done = False
        self._attempts = 0
        self._next = 0  # index of the next candidate of the plan to try
        self._failures: list[UpstreamError] = []
        self._ttft: float | None = None
        self._outcome = "cancelled"  # until the call ends otherwise
        self._recorded = False
        self.route: RouteTaken | None = None
        # For the spend record: what every attempt cost, the answer's usage, its reason.
        self._started = self._clock.now()
        budgets = services.budgets
        self._started_wall = budgets.wall() if budgets is not None else 0.0
        self._settlements: list[asyncio.Task[float]] = []
        self._usage: Usage | None = None
        self._reason = ""
        # For telemetry, recorded once at the end.
        self._obs = Observed(self._started if arrived is None else arrived)
        self._span = services.telemetry.call_started(request)
        quality = services.quality
        self._shadow = None if quality is None else quality.capture(request, route_plan)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> Chunk:
        watchdog = self._watchdog
        if watchdog is None:
            if self._done:
                raise StopAsyncIteration
            return await self._first()
        upstream = self._upstream
        if upstream is None or self._done:
            raise StopAsyncIteration
        try:
            if watchdog.expired is not None:
                raise self._timeout(watchdog.expired)
            watchdog.waiting_since = since = self._clock.now()
            try:
                chunk = await upstream.__anext__()
                obs = self._obs
                obs.waited += self._clock.now() - since
                if chunk.usage is not None:
                    self._usage = chunk.usage
                if chunk.finish_reason:
                    obs.finish = chunk.finish_reason
                if self._shadow is not None:
                    self._shadow.add(chunk.content)
                return chunk
            except asyncio.CancelledError:
                if watchdog.claims():
                    raise self._timeout(watchdog.expired or "idle") from None
                raise
            finally:
                watchdog.waiting_since = None
        except StopAsyncIteration:
            self._done = True
            self._outcome = "ok"
            raise
        except UpstreamError as exc:
            self._done = True
            self._outcome = "error"
            self._obs.error = exc.code.name
            self._health.failed_with(exc)
            raise

    async def _first(self) -> Chunk:
        """Walk the rest of the plan until a candidate produces its first chunk."""
        failures = self._failures
        candidates = self.plan.candidates
        hedge = self.plan.hedge
        opened = None
        if hedge is None:
            while self._next < len(candidates):
                candidate = candidates[self._next]
                self._next += 1
                if self._deadline is not None and self._clock.now() >= self._deadline:
                    failures.append(
                        UpstreamTimeout(candidate.deployment.id, "the caller's deadline passed")
                    )
                    break
                can_spill = self._next < len(candidates)
                opened = await self._try(candidate, failures, can_spill=can_spill)
                if opened is not None:
                    break
        else:
            opened = await self._hedged(candidates, failures, hedge)
        if opened is not None:
            return self._commit(opened)
        self._done = True
        self._outcome = "error"
        error = no_answer(self.plan, failures)
        self._obs.error = error.code.name
        if isinstance(error, PrivacyBlocked):
            self._obs.privacy_refused = True
        raise error

    async def resume(self, failure: UpstreamError) -> bool:
        """After `failure` mid-stream, move on to the next candidate if one is left.

        Only for callers that have shown nothing of the answer to anyone yet (a
        unary call): a streaming caller already has tokens and must get the error.
        """
        if self._next >= len(self.plan.candidates):
            return False
        await self._drop_upstream()
        self._failures.append(failure)
        self._watchdog = None
        self._done = False
        self._outcome = "cancelled"
        self.route = None
        return True

    async def _try(
        self,
        candidate: Candidate,
        failures: list[UpstreamError],
        *,
        can_spill: bool,
        hedge: bool = False,
    ) -> _Opened | None:
        """Try one candidate up to its first chunk; on failure record why and return None."""
        deployment = candidate.deployment
        health = self._health
        clock = self._clock
        if not health.is_available(deployment.id) and deployment.id not in self.plan.despite_health:
            reason = health[deployment.id].reason
            failures.append(UpstreamUnavailable(deployment.id, f"cooling down ({reason})"))
            return None
        if not health.has_slot(deployment):
            cap = deployment.max_parallel_requests
            wait = 0.0 if can_spill else self._services.queue_timeout
            if not await health.wait_for_slot(deployment, wait):
                failures.append(
                    UpstreamUnavailable(deployment.id, f"busy: {cap} requests already in flight")
                )
                return None
        self._attempts += 1
        self._obs.attempted(deployment, self.plan.model, self._attempts)
        health.begin(deployment.id)
        started = clock.now()
        limits = deployment.timeouts
        end = _earliest(self._deadline, started + limits.total)
        egress = self._services.egress
        span = self._attempt_span(deployment)
        try:
            with current(span):
                attempt = await egress.open(
                    deployment, self._request, sensitive=self.plan.sensitive, lifetime=end - started
                )
        except PrivacyBlocked as exc:
            log.error("%s", exc.message)
            self._obs.privacy_refused = True
            end_span(span, exc)
            health.end(deployment.id)
            return None
        except (BudgetRefused, LedgerUnavailable) as exc:
            # Not the deployment's fault: health is told nothing.
            self._obs.budget_refused |= isinstance(exc, BudgetRefused)
            end_span(span, exc)
            health.end(deployment.id)
            failures.append(exc)
            log.info("attempt on %s not made: %s", deployment.id, exc.message)
            return None
        except BaseException:
            end_span(span, None)
            health.end(deployment.id)
            raise
        if self._obs.first_sent is None:
            self._obs.first_sent = clock.now()
        failure: UpstreamError
        billed = False  # whether the provider may bill a failed attempt that relayed nothing
        try:
            with current(span):
                async with timeout_at(clock, _earliest(end, started + limits.first_token)):
                    first = await attempt.chunks.__anext__()
        except TimeoutError:
            billed = True
            callers = self._deadline is not None and clock.now() >= self._deadline
            problem = (
                "the caller's deadline passed before the first token"
                if callers
                else f"no first token within {limits.first_token:g}s"
            )
            failure = timed_out(deployment.id, problem, callers=callers)
        except UpstreamError as exc:
            failure = exc
        except StopAsyncIteration:
            failure = UpstreamMalformed(deployment.id, "the stream ended with no answer")
        except BaseException:
            end_span(span, None)
            self._settled(await egress.close(attempt))
            health.end(deployment.id)
            raise
        else:
            ttft = clock.now() - started
            health.succeeded(deployment.id, ttft)
            return _Opened(deployment, attempt, first, end, ttft, candidate.reason, span, hedge)
        end_span(span, failure)
        self._settled(await egress.close(attempt, billed=billed))
        health.failed_with(failure)
        health.end(deployment.id)
        failures.append(failure)
        log.warning("attempt on %s failed: %s", deployment.id, failure.message)
        return None

    async def _hedged(
        self,
        candidates: tuple[Candidate, ...],
        failures: list[UpstreamError],
        hedge: Hedge,
    ) -> _Opened | None:
        """Like the sequential walk, but when the running attempt has no first token
        after `hedge.after` seconds the next candidate starts too; the first to answer
        wins and the others are cancelled at once."""
        pending = list(candidates[self._next :])
        running: set[asyncio.Task[_Opened | None]] = set()
        clock = self._clock

        def start() -> None:
            candidate = pending.pop(0)
            self._next += 1
            hedged = bool(running)
            self._obs.hedges += hedged
            attempt = self._try(candidate, failures, can_spill=bool(pending), hedge=hedged)
            running.add(asyncio.create_task(attempt))

        def may_hedge() -> bool:
            if len(running) != 1 or not pending:
                return False
            return hedge.to_cloud or pending[0].deployment.locality is Locality.LOCAL

        winner: _Opened | None = None
        start()
        try:
            while running and winner is None:
                due = alarm(clock, clock.now() + hedge.after) if may_hedge() else None
                waiting: set[asyncio.Future[_Opened | None] | asyncio.Future[None]] = set(running)
                if due is not None:
                    waiting.add(due)
                try:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if due is not None:
                        due.cancel()
                finished = [task for task in running if task in done]
                if not finished:
                    start()
                    continue
                for task in finished:
                    running.discard(task)
                    opened = task.result()
                    if winner is None:
                        winner = opened
                    elif opened is not None:
                        await self._release(opened)
                if winner is None and not running and pending:
                    start()
        finally:
            for task in running:
                task.cancel()
            for outcome in await asyncio.gather(*running, return_exceptions=True):
                if isinstance(outcome, _Opened):
                    await self._release(outcome)
        return winner

    async def _release(self, opened: _Opened) -> None:
        """Drop an attempt that answered but lost the race."""
        end_span(opened.span, None)
        try:
            self._settled(await self._services.egress.close(opened.attempt))
        finally:
            self._health.end(opened.deployment.id)

    def _commit(self, opened: _Opened) -> Chunk:
        deployment = opened.deployment
        self._attempt = opened.attempt
        self._upstream = opened.attempt.chunks
        self._deployment = deployment
        self._reason = opened.reason
        self._watchdog = Watchdog(self._clock, deployment.timeouts.idle, opened.end)
        self._ttft = opened.ttft
        obs = self._obs
        obs.committed, obs.hedge_won, obs.waited = self._clock.now(), opened.hedge, 0.0
        obs.attempt_span = opened.span
        if self._shadow is not None:
            self._shadow.add(opened.first.content)
        self.route = route_taken(
            deployment, self._attempts, self._request.request_id, self._translated(deployment)
        )
        first = opened.first
        first.route = self.route
        if first.usage is not None:
            self._usage = first.usage
        if first.finish_reason:
            obs.finish = first.finish_reason
        return first

    def _translated(self, deployment: Deployment) -> str:
        """ "chat" for a text completion the deployment answers as a chat turn."""
        if self._request.completion and not self._services.egress.completes_text(deployment):
            return "chat"
        return ""

    def _timeout(self, reason: str) -> UpstreamTimeout:
        self._done = True
        deployment = self._deployment.id if self._deployment else "?"
        callers = self._deadline is not None and self._clock.now() >= self._deadline
        if reason == "idle" and self._deployment is not None:
            callers = False
            problem = f"no token for {self._deployment.timeouts.idle:g}s mid-stream"
        elif callers:
            problem = "the caller's deadline passed mid-stream"
        else:
            problem = "the call ran past its total time limit"
        return timed_out(deployment, problem, callers=callers)

    async def aclose(self) -> None:
        self._done = True
        await self._drop_upstream()
        if not self._recorded:
            self._recorded = True
            services = self._services
            budgets = services.budgets
            now = self._clock.now()
            end, latency = time.time() if budgets is None else budgets.wall(), now - self._started
            report = self._report(now, end)
            shadow, self._shadow = self._shadow, None
            if shadow is not None and services.quality is not None and self._outcome == "ok":
                services.quality.offer(shadow, self._request, report)

            async def record(cost: float) -> None:
                report.cost = cost
                services.telemetry.call_ended(report, self._span, self._prompt())
                if budgets is not None:
                    await budgets.record(self._spend_record(end, latency, cost))

            if self._settlements:
                # Cloud attempts: recorded once their settlements say what they cost.
                services.egress.after(self._settlements, record)
            else:
                await record(0.0)

    @property
    def ttft(self) -> float | None:
        """Seconds from sending the request that answered to its first chunk."""
        return self._ttft

    async def cost(self) -> float:
        """What the call's attempts cost in USD, once their settlements are done (after
        aclose)."""
        costs = await asyncio.gather(*self._settlements, return_exceptions=True)
        return sum(c for c in costs if isinstance(c, float))

    def _report(self, now: float, end_wall: float) -> CallReport:
        obs = self._obs
        route = self.route
        relay = None
        if obs.committed is not None and self._outcome == "ok":
            relay = max(0.0, now - obs.committed - obs.waited)
        # A failure a later attempt recovered from is not the call's error.
        error = (obs.error or "UNKNOWN") if self._outcome == "error" else None
        return CallReport(
            request_id=self._request.request_id,
            model=self.plan.model,
            route=route,
            outcome=self._outcome,
            started=end_wall - (now - obs.arrived),
            duration=now - obs.arrived,
            ttft=self._ttft,
            usage=self._usage,
            error_type=error,
            reason=self._reason,
            attempts=self._attempts,
            fallbacks=obs.fallbacks,
            retries=obs.retries,
            hedges=obs.hedges,
            hedge_won=obs.hedge_won and route is not None,
            sensitive=self.plan.sensitive,
            budget_refused=obs.budget_refused,
            privacy_refused=obs.privacy_refused,
            overhead=None if obs.first_sent is None else obs.first_sent - obs.arrived,
            relay_overhead=relay,
            finish_reason=obs.finish,
            task=self._request.metadata.get("task", ""),
            operation="text_completion" if self._request.completion else "chat",
        )

    def _prompt(self) -> str | None:
        if not self._services.telemetry.wants_prompt:
            return None
        messages = self._request.messages
        return messages[-1].content if messages else ""

    def _attempt_span(self, deployment: Deployment) -> Span | None:
        tracer, call = self._services.telemetry.tracer, self._span
        if tracer is None or call is None:
            return None
        return tracer.start_attempt(call, deployment, self._attempts)

    def _settled(self, settlement: asyncio.Task[float] | None) -> None:
        if settlement is not None:
            self._settlements.append(settlement)

    async def _drop_upstream(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
        span, self._obs.attempt_span = self._obs.attempt_span, None
        if span is not None:
            end_span(span, None if self._outcome != "error" else self._obs.error)
        if self._attempt is not None:
            attempt, self._attempt, self._upstream = self._attempt, None, None
            try:
                self._settled(await self._services.egress.close(attempt))
            finally:
                if self._deployment is not None:
                    self._health.end(self._deployment.id)

    def _spend_record(self, now: float, latency: float, cost: float) -> SpendRecord:
        route, usage = self.route, self._usage or Usage()
        deployment = self._deployment
        return SpendRecord(
            request_id=self._request.request_id,
            start_time=self._started_wall,
            end_time=now,
            caller=caller_of(self._request),
            model_group=self.plan.model,
            model=deployment.upstream_model if deployment is not None else "",
            deployment=route.deployment if route is not None else "",
            provider=route.provider if route is not None else "",
            locality=route.locality.value if route is not None else "",
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=usage.completion_tokens or 0,
            cached_tokens=usage.cached_tokens or 0,
            cost=cost,
            ttft_ms=None if self._ttft is None else self._ttft * 1000,
            latency_ms=latency * 1000,
            status=self._outcome,
            attempts=self._attempts,
            fallbacks=max(0, self._attempts - 1),
            route_reason=self._reason,
        )


def no_answer(route_plan: RoutePlan, failures: list[UpstreamError]) -> SidecarError:
    """Why a call that tried every candidate of its plan has no answer."""
    refused = [f for f in failures if isinstance(f, BudgetRefused)]
    if refused and len(refused) == len(failures):
        return refused[0].exceeded
    if not failures and route_plan.sensitive:
        return PrivacyBlocked(
            f"request held back for privacy: no local deployment of {route_plan.model!r}"
        )
    note = (
        " and the request was held back for privacy: cloud deployments are excluded"
        if route_plan.sensitive
        else ""
    )
    return NoDeploymentAvailable(route_plan.model, failures, note)


def route_taken(
    deployment: Deployment, attempts: int, request_id: str, translated: str = ""
) -> RouteTaken:
    return RouteTaken(
        deployment=deployment.id,
        model_group=deployment.model_group,
        provider=deployment.provider.value,
        upstream_model=deployment.upstream_model,
        locality=deployment.locality,
        attempts=attempts,
        request_id=request_id,
        translated=translated,
    )


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
