"""The engine: executes a routing plan and relays the answer.

For each candidate of the plan it opens the upstream stream and waits for the
first token under a deadline. Any failure before that token moves on to the
next candidate; after it, the stream is committed and a failure ends the call
with an error, never with a silent switch or a clean-looking truncation.

All requests leave the process through `Engine._open`, which is where the
privacy rule is enforced a second time, whatever the plan says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable

from sidecar.config.model import Deployment, SidecarConfig
from sidecar.errors import (
    NoDeploymentAvailable,
    PrivacyBlocked,
    UpstreamError,
    UpstreamMalformed,
    UpstreamTimeout,
)
from sidecar.providers import ProviderRegistry
from sidecar.routing import RoutePlan, plan
from sidecar.types import ChatRequest, ChatResponse, Chunk, Locality, RouteTaken, ToolCall, Usage
from sidecar.validation import validate_request
from sidecar.watchdog import Watchdog

log = logging.getLogger("sidecar.engine")


class Engine:
    """Routes and relays chat requests; shared by every front door."""

    def __init__(self, config: SidecarConfig, providers: ProviderRegistry | None = None) -> None:
        self.config = config
        self.providers = providers or ProviderRegistry()

    def plan(self, request: ChatRequest) -> RoutePlan:
        validate_request(request)
        return plan(request, self.config)

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
        """Run a call to the end and return the whole answer."""
        stream = self.stream(request, remaining)
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
        await self.providers.aclose()


class ChatStream:
    """One call in progress: iterate it for chunks; `route` is set with the first."""

    def __init__(
        self, engine: Engine, request: ChatRequest, route_plan: RoutePlan, deadline: float | None
    ) -> None:
        self._engine = engine
        self._request = request
        self.plan = route_plan
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._upstream: AsyncGenerator[Chunk, None] | None = None
        self._deployment: Deployment | None = None
        self._watchdog: Watchdog | None = None
        self._done = False
        self.route: RouteTaken | None = None

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
        if watchdog.expired is not None:
            raise self._timeout(watchdog.expired)
        watchdog.waiting_since = self._loop.time()
        try:
            chunk = await upstream.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise
        except asyncio.CancelledError:
            if watchdog.claims():
                raise self._timeout(watchdog.expired or "idle") from None
            raise
        finally:
            watchdog.waiting_since = None
        return chunk

    async def _first(self) -> Chunk:
        """Walk the plan until a candidate produces its first chunk."""
        loop = self._loop
        failures: list[UpstreamError] = []
        route_plan = self.plan
        for attempt, candidate in enumerate(route_plan.candidates, 1):
            deployment = candidate.deployment
            now = loop.time()
            if self._deadline is not None and now >= self._deadline:
                failures.append(UpstreamTimeout(deployment.id, "the caller's deadline passed"))
                break
            limits = deployment.timeouts
            end = _earliest(self._deadline, now + limits.total)
            try:
                upstream = self._engine._open(route_plan, deployment, self._request)
            except PrivacyBlocked as exc:
                log.error("%s", exc.message)
                continue
            except UpstreamError as exc:
                failures.append(exc)
                continue
            try:
                async with asyncio.timeout_at(_earliest(end, now + limits.first_token)):
                    first = await upstream.__anext__()
            except TimeoutError:
                await upstream.aclose()
                failures.append(
                    UpstreamTimeout(
                        deployment.id, f"no first token within {loop.time() - now:.1f}s"
                    )
                )
                continue
            except UpstreamError as exc:
                await upstream.aclose()
                failures.append(exc)
                log.warning("attempt %d failed: %s", attempt, exc.message)
                continue
            except StopAsyncIteration:
                failures.append(UpstreamMalformed(deployment.id, "the stream ended with no answer"))
                continue
            except BaseException:
                await upstream.aclose()
                raise
            self._upstream = upstream
            self._deployment = deployment
            self._watchdog = Watchdog(limits.idle, end)
            self.route = RouteTaken(
                deployment=deployment.id,
                model_group=deployment.model_group,
                provider=deployment.provider.value,
                upstream_model=deployment.upstream_model,
                locality=deployment.locality,
                attempts=attempt,
                request_id=self._request.request_id,
            )
            first.route = self.route
            return first
        self._done = True
        if not failures and route_plan.sensitive:
            raise PrivacyBlocked(
                f"request held back for privacy: no local deployment of {route_plan.model!r}"
            )
        raise NoDeploymentAvailable(route_plan.model, failures)

    def _timeout(self, reason: str) -> UpstreamTimeout:
        self._done = True
        deployment = self._deployment.id if self._deployment else "?"
        if reason == "idle" and self._deployment is not None:
            problem = f"no token for {self._deployment.timeouts.idle:g}s mid-stream"
        else:
            problem = "the call ran past its total time limit"
        return UpstreamTimeout(deployment, problem)

    async def aclose(self) -> None:
        self._done = True
        if self._watchdog is not None:
            self._watchdog.close()
        if self._upstream is not None:
            upstream, self._upstream = self._upstream, None
            await upstream.aclose()


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def merge_tool_calls(fragments: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    """Accumulate streamed tool-call fragments by index into whole calls."""
    merged: dict[int, ToolCall] = {}
    for fragment in fragments:
        previous = merged.get(fragment.index)
        if previous is None:
            merged[fragment.index] = fragment
        else:
            merged[fragment.index] = ToolCall(
                id=previous.id or fragment.id,
                name=previous.name or fragment.name,
                arguments=previous.arguments + fragment.arguments,
                index=fragment.index,
            )
    return tuple(merged[i] for i in sorted(merged))
