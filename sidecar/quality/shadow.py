"""Shadow sampling: a sample of locally served calls is also sent to a comparison
model, after the caller has its answer, and the two answers are kept as a pair.

Only calls that were not sensitive and were answered locally are sampled; the
shadow call is an ordinary call through the engine and so through the egress,
which also refuses any shadow of a sensitive request outright. Shadow calls
count toward budgets like any other; one refused for budget pauses sampling
until the cap could have room again. They never delay or fail the caller's
call: sampling decides at the start (a random draw, nothing else), the local
answer is kept only for sampled calls and only up to `preview_chars`, and the
shadow work waits in a bounded queue served by `max_concurrency` workers (a
full queue drops the sample).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from sidecar.config.model import QualityConfig
from sidecar.errors import BudgetExceeded, SidecarError
from sidecar.routing import RoutePlan
from sidecar.telemetry import CallReport
from sidecar.types import ChatRequest, Locality, RouteTaken, Usage

log = logging.getLogger("sidecar.quality")

SHADOW_KEY: Final = "llm_sidecar.shadow"
_BUDGET_PAUSE: Final = 60.0  # seconds sampling rests after a refusal that gave no retry time


def is_shadow(request: ChatRequest) -> bool:
    return request.metadata.get(SHADOW_KEY) == "1"


class ShadowCapture:
    """The start of a sampled call's local answer, up to a limit."""

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0

    def add(self, text: str) -> None:
        if text and self._size < self._limit:
            self._parts.append(text)
            self._size += len(text)

    def text(self) -> str:
        return "".join(self._parts)[: self._limit]


@dataclass(frozen=True, slots=True)
class ShadowAnswer:
    text: str
    usage: Usage | None
    latency: float  # seconds
    ttft: float | None
    cost: float  # USD
    route: RouteTaken | None


ShadowRun = Callable[[ChatRequest], Awaitable[ShadowAnswer]]
PairSink = Callable[[dict[str, Any]], Awaitable[None]]


class ShadowSampler:
    def __init__(
        self,
        config: QualityConfig,
        run: ShadowRun,
        sink: PairSink,
        *,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        assert config.compare_with is not None
        self._config = config
        self._compare_with: str = config.compare_with
        self._run = run
        self._sink = sink
        self._rng = rng or random.Random()
        self._now = now
        self._queue: asyncio.Queue[tuple[str, ChatRequest, CallReport]] = asyncio.Queue(
            config.max_queue
        )
        self._workers: list[asyncio.Task[None]] = []
        self._paused_until = 0.0
        self.dropped = 0
        self.written = 0

    def capture(self, request: ChatRequest, plan: RoutePlan) -> ShadowCapture | None:
        """A capture for the call's answer when the call is sampled, else None."""
        config = self._config
        if (
            config.sample_rate <= 0
            or plan.sensitive
            or request.model == self._compare_with
            or is_shadow(request)
            or not plan.candidates
            or plan.candidates[0].deployment.locality is not Locality.LOCAL
            or self._rng.random() >= config.sample_rate
            or self._now() < self._paused_until
        ):
            return None
        return ShadowCapture(config.preview_chars)

    def offer(self, capture: ShadowCapture, request: ChatRequest, report: CallReport) -> None:
        """Queue the shadow of a finished call; never waits, never raises."""
        route = report.route
        if route is None or route.locality is not Locality.LOCAL or report.sensitive:
            return
        try:
            self._queue.put_nowait((capture.text(), request, report))
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"quality shadow {i}")
                for i in range(self._config.max_concurrency)
            ]

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._shadow(*item)
            except Exception:
                log.exception("a shadow call failed")
            finally:
                self._queue.task_done()

    async def _shadow(self, local_text: str, request: ChatRequest, report: CallReport) -> None:
        if self._now() < self._paused_until:
            return
        shadow = dataclasses.replace(
            request,
            model=self._compare_with,
            metadata={**request.metadata, SHADOW_KEY: "1"},
            request_id=f"{request.request_id}-shadow" if request.request_id else "",
        )
        try:
            answer = await self._run(shadow)
        except BudgetExceeded as exc:
            pause = exc.retry_after if exc.retry_after else _BUDGET_PAUSE
            self._paused_until = self._now() + pause
            log.info("shadow sampling paused for %.0fs: %s", pause, exc.message)
            return
        except SidecarError as exc:
            log.info("shadow call to %s not made: %s", self._compare_with, exc.message)
            return
        if answer.route is None or answer.route.model_group != self._compare_with:
            return  # a fallback answered: not the comparison asked for
        await self._sink(self._pair(local_text, request, report, answer))
        self.written += 1

    def _pair(
        self, local_text: str, request: ChatRequest, report: CallReport, answer: ShadowAnswer
    ) -> dict[str, Any]:
        limit = self._config.preview_chars
        route = report.route
        assert route is not None
        prompt = request.messages[-1].content if request.messages else ""
        return {
            "time": time.time(),
            "request_id": request.request_id,
            "task": report.task,
            "model": report.model,
            "route": {
                "deployment": route.deployment,
                "model_group": route.model_group,
                "reason": report.reason,
            },
            "prompt_preview": prompt[:limit],
            "local": _side(
                local_text, report.usage, report.duration, report.ttft, report.cost, route
            ),
            "shadow": _side(
                answer.text[:limit], answer.usage, answer.latency, answer.ttft, answer.cost,
                answer.route,
            ),
        }  # fmt: skip

    async def drain(self) -> None:
        """Wait for the queued shadows (tests, and a graceful stop)."""
        if self._workers:
            await self._queue.join()

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []


def _side(
    text: str,
    usage: Usage | None,
    latency: float,
    ttft: float | None,
    cost: float,
    route: RouteTaken | None,
) -> dict[str, Any]:
    return {
        "answer": text,
        "deployment": route.deployment if route else None,
        "locality": route.locality.value if route else None,
        "input_tokens": usage.prompt_tokens if usage else None,
        "output_tokens": usage.completion_tokens if usage else None,
        "latency_ms": round(latency * 1000, 3),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
        "cost_usd": cost,
    }
