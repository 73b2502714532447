"""The egress: the one place where a request leaves the process.

Every attempt of every call (first tries, retries, fallbacks, hedges) goes
through `Egress.open`, so the rules that must hold whatever the plan says are
enforced here once: a sensitive request never reaches a deployment that is not
local, and a cloud call is made only after its worst-case cost was reserved on
every spend cap it counts toward (quality shadow calls included: they come
through here like any other). `Egress.close` ends the attempt and settles
that reservation with what the provider bills, in a task of its own: the
caller does not wait for the ledger once its answer is over, and a caller that
cancels cannot cancel the settlement. A local attempt is the provider's own
stream, untouched: no ledger, no extra layer per token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TypeVar

from sidecar.budget import Budgets, Ticket
from sidecar.config.model import Deployment
from sidecar.errors import PrivacyBlocked, UpstreamError
from sidecar.providers import ProviderRegistry
from sidecar.quality import is_shadow
from sidecar.types import ChatRequest, Chunk, EmbeddingRequest, Embeddings, Locality, Usage

log = logging.getLogger("sidecar.engine.egress")
_T = TypeVar("_T")


class Metered:
    """A cloud attempt's stream, counting what it relays so it can be charged."""

    __slots__ = ("_inner", "chars", "chunks", "usage")

    def __init__(self, inner: AsyncGenerator[Chunk, None]) -> None:
        self._inner = inner
        self.chunks = 0
        self.chars = 0
        self.usage: Usage | None = None

    def __aiter__(self) -> Metered:
        return self

    async def __anext__(self) -> Chunk:
        chunk = await self._inner.__anext__()
        self.chunks += 1
        self.chars += len(chunk.content)
        if chunk.usage is not None:
            self.usage = chunk.usage
        return chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


Chunks = AsyncGenerator[Chunk, None] | Metered


class Attempt:
    """One opened attempt: its chunks, and the reservation a cloud one holds."""

    __slots__ = ("chunks", "deployment", "metered", "ticket")

    def __init__(
        self,
        deployment: Deployment,
        chunks: Chunks,
        ticket: Ticket | None = None,
    ) -> None:
        self.deployment = deployment
        self.chunks = chunks
        self.ticket = ticket
        self.metered = chunks if isinstance(chunks, Metered) else None


class Egress:
    __slots__ = ("_background", "_budgets", "_providers")

    def __init__(self, providers: ProviderRegistry, budgets: Budgets | None = None) -> None:
        self._providers = providers
        self._budgets = budgets
        self._background: set[asyncio.Task[object]] = set()

    async def open(
        self, deployment: Deployment, request: ChatRequest, *, sensitive: bool, lifetime: float
    ) -> Attempt:
        """Start `request` on `deployment`; `lifetime` is the longest the attempt may run.

        Raises PrivacyBlocked when a sensitive request would leave for a deployment that
        is not local, BudgetRefused when a cap has no room for the call's worst case, and
        LedgerUnavailable when the ledger cannot say (cloud fails closed).
        """
        if sensitive and is_shadow(request):
            # Quality shadow traffic of a sensitive request goes nowhere, not even local.
            raise PrivacyBlocked("a sensitive request is never sent as a quality shadow")
        if deployment.locality is Locality.LOCAL:
            return Attempt(deployment, self._providers.stream(deployment, request))
        self._check_privacy(deployment, sensitive)
        budgets = self._budgets
        if budgets is None:
            return Attempt(deployment, Metered(self._providers.stream(deployment, request)))
        ticket, request = await budgets.reserve(deployment, request, lifetime)
        try:
            stream = self._providers.stream(deployment, request)
        except BaseException:
            self._settle(ticket, None, billed=False)
            raise
        return Attempt(deployment, Metered(stream), ticket)

    async def embed(
        self,
        deployment: Deployment,
        request: EmbeddingRequest,
        priced: ChatRequest,
        *,
        sensitive: bool,
        lifetime: float,
    ) -> tuple[Embeddings, asyncio.Task[float] | None]:
        """Embed `request` on `deployment` under the same rules as a chat attempt: a
        sensitive request only locally, a cloud call only once `priced` (the inputs as a
        chat with one answer token, what the budgets price) is reserved. Returns the
        vectors and the settlement of a cloud call's reservation, if it held one."""
        self._check_privacy(deployment, sensitive)
        budgets = self._budgets
        if deployment.locality is Locality.LOCAL or budgets is None:
            return await self._providers.embed(deployment, request), None
        ticket, _ = await budgets.reserve(deployment, priced, lifetime)
        try:
            answer = await self._providers.embed(deployment, request)
        except BaseException as exc:
            # A refusal or an error status is not billed; a transport failure may have been.
            billed = not isinstance(exc, UpstreamError) or exc.deployment_fault
            self._track(budgets.settle(ticket, None, 0, 0, billed=billed))
            raise
        return answer, self._track(budgets.settle(ticket, answer.usage, 1, 0, billed=True))

    def completes_text(self, deployment: Deployment) -> bool:
        """Whether a text completion goes to the deployment as a prompt (else a chat turn)."""
        return self._providers.completes_text(deployment)

    def _check_privacy(self, deployment: Deployment, sensitive: bool) -> None:
        if sensitive and deployment.locality is not Locality.LOCAL:
            raise PrivacyBlocked(
                f"request held back for privacy: refused to send a sensitive request to "
                f"cloud deployment {deployment.id!r}"
            )

    async def close(self, attempt: Attempt, *, billed: bool = True) -> asyncio.Task[float] | None:
        """End the attempt and start settling its reservation; the task gives what the
        attempt cost in USD (None for an attempt that reserved nothing).

        `billed` False says the attempt failed in a way the provider does not bill
        (refused, an error status) when it relayed nothing.
        """
        try:
            await attempt.chunks.aclose()
        finally:
            settlement = None
            if attempt.ticket is not None:
                settlement = self._settle(attempt.ticket, attempt.metered, billed=billed)
        return settlement

    def _settle(
        self, ticket: Ticket, metered: Metered | None, *, billed: bool
    ) -> asyncio.Task[float]:
        budgets = self._budgets
        assert budgets is not None
        usage = None if metered is None else metered.usage
        chunks = 0 if metered is None else metered.chunks
        chars = 0 if metered is None else metered.chars
        return self._track(budgets.settle(ticket, usage, chunks, chars, billed=billed))

    def after(
        self, settlements: Sequence[asyncio.Task[float]], then: Callable[[float], Awaitable[None]]
    ) -> None:
        """Once `settlements` are done, call `then` with their total cost, in the background."""

        async def wait() -> None:
            costs = await asyncio.gather(*settlements, return_exceptions=True)
            for failure in (c for c in costs if isinstance(c, BaseException)):
                log.error("a settlement failed: %s", type(failure).__name__)
            await then(sum(c for c in costs if isinstance(c, float)))

        self._track(wait())

    def _track(self, work: Awaitable[_T]) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def drain(self) -> None:
        """Wait for settlements and the spend records that wait on them."""
        while self._background:
            await asyncio.wait(set(self._background))
