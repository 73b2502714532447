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
from sidecar.budget.budgets import BudgetBook
from sidecar.budget.prices import Price
from sidecar.clock import Clock, MonotonicClock
from sidecar.config.model import SidecarConfig
from sidecar.engine.egress import Egress
from sidecar.engine.embedding import (
    EmbedCall,
    EmbedServices,
    planning_request,
    validate_embedding,
)
from sidecar.engine.observe import call_log, observe, rejected, shadow_sampler
from sidecar.engine.operations import Operations
from sidecar.engine.snapshot import Snapshot
from sidecar.engine.stream import CallServices, ChatStream
from sidecar.engine.validation import validate_request
from sidecar.errors import AnswerTooLarge, InvalidRequest, ShuttingDown, SidecarError, UpstreamError
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
    ProcessStatus,
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
        self.telemetry = telemetry or Telemetry.from_config(
            config.telemetry, call_log=call_log(config.logging)
        )
        self.health = HealthTracker(config.deployments, config.health, clock=self.clock)
        # Raises ConfigError for a cloud deployment with no price.
        self.budgets = Budgets(config, data_dir=data_dir, wall=wall)
        self._egress = Egress(self.providers, self.budgets)
        observe(self)
        self.quality = shadow_sampler(self)
        self._services = CallServices(
            egress=self._egress,
            health=self.health,
            clock=self.clock,
            telemetry=self.telemetry,
            queue_timeout=config.health.queue_timeout,
            budgets=self.budgets,
            quality=self.quality,
        )
        self._embed_services = EmbedServices(
            egress=self._egress,
            health=self.health,
            clock=self.clock,
            telemetry=self.telemetry,
            budgets=self.budgets,
        )
        self._prober: asyncio.Task[None] | None = None
        self._retired_probers: list[asyncio.Task[None]] = []
        self._started = False
        self.operations = Operations()

    @property
    def config(self) -> SidecarConfig:
        return self.snapshot.config

    async def start(self) -> None:
        """Open the budgets' stores and start the background work: the spend log writer,
        the budget sweep and, when configured, active health probes."""
        if not self._started:
            self._started = True
            await self.budgets.start()
        if self._prober is None:
            self._start_prober()

    def _start_prober(self) -> None:
        config = self.config
        if config.health.probe_interval > 0:
            prober = Prober(
                config.deployments, self.health, self.providers, config.health, self.clock
            )
            self._prober = asyncio.create_task(prober.run(), name="health probes")

    def plan(self, request: ChatRequest) -> RoutePlan:
        if self.operations.draining:
            raise ShuttingDown()
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
        arrived = self.clock.now()
        try:
            route_plan = self.plan(request)
        except SidecarError as exc:
            self.telemetry.call_ended(rejected(request, exc, self.clock.now() - arrived))
            raise
        return self.execute(request, route_plan, remaining, arrived)

    def execute(
        self,
        request: ChatRequest,
        route_plan: RoutePlan,
        remaining: float | None = None,
        arrived: float | None = None,
    ) -> ChatStream:
        """Start a call along a plan already made; every attempt still goes through the
        egress, so no plan can send a sensitive request to the cloud. `arrived` is when
        the call came in (clock time), for the sidecar's overhead."""
        deadline = None if remaining is None else self.clock.now() + remaining
        return ChatStream(self._services, request, route_plan, deadline, arrived)

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
        if self.operations.draining:
            raise ShuttingDown()
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

    # -- operations: reload and drain (driven by sidecar/runtime/) ------------------------

    async def adopt(self, config: SidecarConfig) -> None:
        """Serve `config` from the next call on; calls in flight finish on the plan they have.

        Health and budget state carry over for deployments that kept their identity. Raises
        ConfigError (a cloud deployment with no price, say) having changed nothing. The
        compiling (routing policy, privacy patterns, prices: tens of milliseconds) runs on a
        thread so that streams keep flowing; the swap itself does not await, so no call
        sees half of it."""
        snapshot, rules = await asyncio.to_thread(_compile, config, self.snapshot)
        self.budgets.reconfigure(rules)
        self.health.retarget(config.deployments, config.health)
        self._services = dataclasses.replace(
            self._services, queue_timeout=config.health.queue_timeout
        )
        self.snapshot = snapshot
        if self._prober is not None:
            self._prober.cancel()
            self._retired_probers.append(self._prober)
            self._prober = None
            self._start_prober()

    def refuse_new_calls(self) -> None:
        """Draining: every new call fails with ShuttingDown (UNAVAILABLE, HTTP 503)."""
        self.operations.draining = True

    def process_status(self) -> ProcessStatus:
        return self.operations.status()

    async def aclose(self) -> None:
        probers = [*self._retired_probers, *([self._prober] if self._prober else [])]
        self._retired_probers = []
        self._prober = None
        for prober in probers:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        if self.quality is not None:
            await self.quality.aclose()
        await self._egress.drain()
        if self._started:
            self._started = False
            # After the front doors drained: every call's record is queued by now.
            await self.budgets.aclose()
        await self.providers.aclose()
        # Exporters flush on shutdown with blocking I/O: off the event loop.
        await asyncio.to_thread(self.telemetry.shutdown)


def _compile(
    config: SidecarConfig, previous: Snapshot
) -> tuple[Snapshot, tuple[dict[str, Price], BudgetBook]]:
    """What a reload computes before the swap; touches no engine state."""
    return Snapshot.build(config, previous), Budgets.rules(config)
