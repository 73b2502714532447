"""The engine: plans each call and runs it (see stream.py), shared by every front door.

It owns what outlives one call: the configuration snapshot (configuration and
compiled routing policy), the providers and their connection pools, the egress
through which every request leaves, the health tracker and its probes, the
budgets (ledger and spend log), the clock, and telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable

from sidecar.budget import Budgets
from sidecar.clock import Clock, MonotonicClock
from sidecar.config.model import SidecarConfig
from sidecar.engine.egress import Egress
from sidecar.engine.embedding import (
    EmbedCall,
    EmbedServices,
    planning_request,
    validate_embedding,
)
from sidecar.engine.snapshot import Snapshot
from sidecar.engine.stream import CallServices, ChatStream
from sidecar.engine.validation import validate_request
from sidecar.errors import AnswerTooLarge, InvalidRequest, UpstreamError
from sidecar.health import HealthTracker
from sidecar.health.probes import Prober
from sidecar.providers import ProviderRegistry
from sidecar.routing import RoutePlan, plan
from sidecar.telemetry import Telemetry
from sidecar.types import (
    BudgetStatus,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelStatus,
    SpendQuery,
    SpendReport,
    ThinkingBlock,
    ToolCall,
    Usage,
    merge_tool_calls,
)


class Engine:
    """Routes and relays chat requests; shared by every front door."""

    def __init__(
        self,
        config: SidecarConfig,
        providers: ProviderRegistry | None = None,
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
        *,
        data_dir: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`data_dir` holds the SQLite ledger and spend log (default: the configuration's
        budget.data_dir, else memory); `wall` is the calendar clock budget windows use."""
        self.snapshot = Snapshot.build(config)
        self.clock = clock or MonotonicClock()
        self.providers = providers or ProviderRegistry()
        self.telemetry = telemetry or Telemetry.from_config(config.telemetry)
        self.health = HealthTracker(config.deployments, config.health, clock=self.clock)
        # Raises ConfigError for a cloud deployment with no price.
        self.budgets = Budgets(config, data_dir=data_dir, wall=wall)
        self._egress = Egress(self.providers, self.budgets)
        self._services = CallServices(
            egress=self._egress,
            health=self.health,
            clock=self.clock,
            telemetry=self.telemetry,
            queue_timeout=config.health.queue_timeout,
            budgets=self.budgets,
        )
        self._embed_services = EmbedServices(
            egress=self._egress,
            health=self.health,
            clock=self.clock,
            telemetry=self.telemetry,
            budgets=self.budgets,
        )
        self._prober: asyncio.Task[None] | None = None
        self._started = False

    @property
    def config(self) -> SidecarConfig:
        return self.snapshot.config

    async def start(self) -> None:
        """Open the budgets' stores and start the background work: the spend log writer,
        the budget sweep and, when configured, active health probes."""
        if not self._started:
            self._started = True
            await self.budgets.start()
        config = self.config
        if config.health.probe_interval > 0 and self._prober is None:
            prober = Prober(
                config.deployments, self.health, self.providers, config.health, self.clock
            )
            self._prober = asyncio.create_task(prober.run(), name="health probes")

    def plan(self, request: ChatRequest) -> RoutePlan:
        validate_request(request)
        snapshot = self.snapshot
        return plan(request, snapshot.config, snapshot.policy, self.health, self.budgets.view())

    def models(self) -> tuple[ModelStatus, ...]:
        """Every alias with its deployments and what health tracking knows of each."""
        return self.snapshot.models(self.health)

    def stream(self, request: ChatRequest, remaining: float | None = None) -> ChatStream:
        """Start a call; `remaining` is the caller's time left in seconds, if any.

        Planning errors (unknown model, invalid request, privacy) raise here,
        before anything is sent upstream.
        """
        return self.execute(request, self.plan(request), remaining)

    def execute(
        self, request: ChatRequest, route_plan: RoutePlan, remaining: float | None = None
    ) -> ChatStream:
        """Start a call along a plan already made; every attempt still goes through the
        egress, so no plan can send a sensitive request to the cloud."""
        deadline = None if remaining is None else self.clock.now() + remaining
        return ChatStream(self._services, request, route_plan, deadline)

    async def complete(self, request: ChatRequest, remaining: float | None = None) -> ChatResponse:
        """Run a call to the end and return the whole answer.

        Nothing reaches the caller before the end, so unlike a stream, a failure
        after the first token still moves on to the next candidate. The answer is
        held in memory, so it is bounded: past `limits.max_answer_chars` the call
        fails with AnswerTooLarge (a tool-call fragment counts at least 64, so that
        a flood of tiny fragments is bounded too).
        """
        stream = self.stream(request, remaining)
        limit = self.config.limits.max_answer_chars
        try:
            while True:
                text: list[str] = []
                reasoning: list[str] = []
                thinking: list[ThinkingBlock] = []
                fragments: list[ToolCall] = []
                finish = "stop"
                usage = Usage()
                size = 0
                try:
                    async for chunk in stream:
                        if chunk.content:
                            text.append(chunk.content)
                            size += len(chunk.content)
                        for call in chunk.tool_calls:
                            size += max(64, len(call.id) + len(call.name) + len(call.arguments))
                        if size > limit:
                            raise self._too_large(stream, limit)
                        fragments.extend(chunk.tool_calls)
                        if chunk.reasoning:
                            reasoning.append(chunk.reasoning)
                        thinking.extend(chunk.thinking)
                        if chunk.finish_reason:
                            finish = chunk.finish_reason
                        if chunk.usage is not None:
                            usage = chunk.usage
                except UpstreamError as exc:
                    if await stream.resume(exc):
                        continue
                    raise
                break
        finally:
            await stream.aclose()
        assert stream.route is not None  # set with the first chunk, and a finished call had one
        return ChatResponse(
            "".join(text),
            merge_tool_calls(fragments),
            finish,
            usage,
            stream.route,
            "".join(reasoning),
            tuple(thinking),
        )

    # -- embeddings ---------------------------------------------------------------------

    def plan_embedding(self, request: EmbeddingRequest) -> RoutePlan:
        """The plan for an embedding batch: the chat plan of its stand-in request, with
        the privacy detector run over every input (see engine/embedding.py)."""
        validate_embedding(request)
        snapshot = self.snapshot
        if (
            request.model == snapshot.policy.auto_alias
            and request.model not in snapshot.config.groups
        ):
            raise InvalidRequest(
                "model", f"{request.model!r} routes chats by their content; name an embedding model"
            )
        detector = snapshot.policy.detector
        reasons: tuple[str, ...] = ()
        if detector is not None and not request.hints.local_only:
            reasons = detector.detect("\n".join(request.texts))
        stand_in = planning_request(request, reasons)
        route_plan = plan(
            stand_in, snapshot.config, snapshot.policy, self.health, self.budgets.view()
        )
        if reasons and route_plan.sensitive_reasons != reasons:
            route_plan = dataclasses.replace(route_plan, sensitive_reasons=reasons)
        return route_plan

    async def embed(
        self, request: EmbeddingRequest, remaining: float | None = None
    ) -> EmbeddingResponse:
        """Embed a batch along the plan; the first candidate that answers wins.

        Planning errors raise before anything is sent; a sensitive batch reaches only
        local deployments (the egress refuses any other).
        """
        route_plan = self.plan_embedding(request)
        deadline = None if remaining is None else self.clock.now() + remaining
        return await EmbedCall(self._embed_services, request, route_plan, deadline).run()

    async def budget_status(self) -> tuple[BudgetStatus, ...]:
        """Every spend cap in its current window: cap, spent, held, when it resets."""
        return await self.budgets.status()

    async def spend(self, query: SpendQuery) -> SpendReport:
        """Spend records and daily totals matching `query`, with the caps' headroom."""
        return await self.budgets.report(query)

    def _too_large(self, stream: ChatStream, limit: int) -> AnswerTooLarge:
        """An answer that outgrew the limit: a deployment that will not stop, so its fault."""
        assert stream.route is not None  # there was a chunk
        error = AnswerTooLarge(stream.route.deployment, limit)
        self.health.failed_with(error)
        return error

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        await self._egress.drain()
        if self._started:
            self._started = False
            # After the front doors drained: every call's record is queued by now.
            await self.budgets.aclose()
        await self.providers.aclose()
        self.telemetry.shutdown()
