"""The engine: plans each call and runs it (see call.py), shared by every front door.

It owns what outlives one call: the configuration, the compiled routing
policy, the providers and their connection pools, the health tracker and its
probes, and telemetry. All requests leave the process through `Engine._open`,
which is where the privacy rule is enforced a second time, whatever the plan
says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from sidecar.config.model import Deployment, SidecarConfig
from sidecar.engine.stream import ChatStream
from sidecar.engine.validation import validate_request
from sidecar.errors import (
    PrivacyBlocked,
    UpstreamError,
)
from sidecar.health import HealthTracker
from sidecar.health.probes import Prober
from sidecar.providers import ProviderRegistry
from sidecar.routing import RoutePlan, compile_routing, plan
from sidecar.telemetry import Telemetry
from sidecar.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    Locality,
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
    ) -> None:
        self.config = config
        self.providers = providers or ProviderRegistry()
        self.telemetry = telemetry or Telemetry.from_config(config.telemetry)
        self.health = HealthTracker(config.deployments, config.health)
        self.policy = compile_routing(config)
        self._prober: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background work: active health probes, when configured."""
        if self.config.health.probe_interval > 0 and self._prober is None:
            prober = Prober(
                self.config.deployments, self.health, self.providers, self.config.health
            )
            self._prober = asyncio.create_task(prober.run(), name="health probes")

    def hedging(self, route_plan: RoutePlan) -> tuple[float, bool] | None:
        """(seconds, may hedge to cloud) when the plan's first group hedges, else None."""
        if len(route_plan.candidates) < 2:
            return None
        group = route_plan.candidates[0].deployment.model_group
        policy = self.config.router_settings.model_group_retry_policy.get(group)
        if policy is None or policy.hedge_after_ms is None:
            return None
        return policy.hedge_after_ms / 1000, policy.hedge_to_cloud

    def plan(self, request: ChatRequest) -> RoutePlan:
        validate_request(request)
        return plan(request, self.config, self.policy, self.health)

    def stream(self, request: ChatRequest, remaining: float | None = None) -> ChatStream:
        """Start a call; `remaining` is the caller's time left in seconds, if any.

        Planning errors (unknown model, invalid request, privacy) raise here,
        before anything is sent upstream.
        """
        route_plan = self.plan(request)
        loop = asyncio.get_running_loop()
        deadline = None if remaining is None else loop.time() + remaining
        return ChatStream(self, request, route_plan, deadline)

    async def complete(self, request: ChatRequest, remaining: float | None = None) -> ChatResponse:
        """Run a call to the end and return the whole answer.

        Nothing reaches the caller before the end, so unlike a stream, a failure
        after the first token still moves on to the next candidate.
        """
        stream = self.stream(request, remaining)
        try:
            while True:
                text: list[str] = []
                fragments: list[ToolCall] = []
                finish = "stop"
                usage = Usage()
                try:
                    async for chunk in stream:
                        if chunk.content:
                            text.append(chunk.content)
                        fragments.extend(chunk.tool_calls)
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
        return ChatResponse("".join(text), merge_tool_calls(fragments), finish, usage, stream.route)

    def _open(
        self, route_plan: RoutePlan, deployment: Deployment, request: ChatRequest
    ) -> AsyncGenerator[Chunk, None]:
        """The single point where a request leaves the process."""
        if route_plan.sensitive and deployment.locality is not Locality.LOCAL:
            raise PrivacyBlocked(
                f"request held back for privacy: refused to send a sensitive request to "
                f"cloud deployment {deployment.id!r}"
            )
        return self.providers.stream(deployment, request)

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        await self.providers.aclose()
        self.telemetry.shutdown()
