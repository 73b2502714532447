"""The one interface the HTTP app calls, and its in-process implementation.

    Backend            stream / complete / embed / models / ready / prompt_estimate, start,
                       aclose
    ├── InProcessBackend   calls the Engine in this process (`llm-sidecar serve`)
    └── RemoteBackend      speaks gRPC to a sidecar elsewhere (bridge/remote.py)

Both raise `SidecarError`s with the engine's error codes, so the app maps one
set of failures to HTTP whatever is behind it.
"""

from __future__ import annotations

from typing import Protocol

from sidecar.engine import Engine
from sidecar.types import (
    BudgetStatus,
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelStatus,
    RouteTaken,
    SpendQuery,
    SpendReport,
)


class AnswerStream(Protocol):
    """One call in progress. `route` is set once the first chunk arrived; always aclose()."""

    route: RouteTaken | None

    def __aiter__(self) -> AnswerStream: ...

    async def __anext__(self) -> Chunk: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    mode: str

    async def start(self) -> None: ...

    def stream(
        self, request: ChatRequest, remaining: float | None, credential: str | None = None
    ) -> AnswerStream:
        """Start a call with `remaining` seconds to live (None: no limit of the caller's).

        `credential` is the key the caller sent, for a backend that checks it again.
        Errors known before anything is sent upstream may raise here.
        """
        ...

    async def complete(
        self, request: ChatRequest, remaining: float | None, credential: str | None = None
    ) -> ChatResponse: ...

    async def embed(
        self, request: EmbeddingRequest, remaining: float | None, credential: str | None = None
    ) -> EmbeddingResponse: ...

    async def models(self, credential: str | None = None) -> tuple[ModelStatus, ...]: ...

    async def spend(self, query: SpendQuery, credential: str | None = None) -> SpendReport:
        """Spend records and daily totals matching `query`, with every cap's headroom."""
        ...

    async def budgets(self, credential: str | None = None) -> tuple[BudgetStatus, ...]: ...

    async def ready(self) -> str | None:
        """None when calls can be served, else why not."""
        ...

    async def prompt_estimate(
        self, request: ChatRequest, credential: str | None = None
    ) -> tuple[int, str]:
        """The routing plan's estimate of the prompt's tokens, and the provider of its
        first candidate; nothing is sent upstream."""
        ...

    async def aclose(self) -> None: ...


class InProcessBackend:
    """The engine of this process. It does not own the engine: its server closes it."""

    mode = "in-process"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def start(self) -> None:
        return None

    # The caller's key was checked by the app against the same configuration: not again.
    def stream(
        self, request: ChatRequest, remaining: float | None, credential: str | None = None
    ) -> AnswerStream:
        return self._engine.stream(request, remaining)

    async def complete(
        self, request: ChatRequest, remaining: float | None, credential: str | None = None
    ) -> ChatResponse:
        return await self._engine.complete(request, remaining)

    async def embed(
        self, request: EmbeddingRequest, remaining: float | None, credential: str | None = None
    ) -> EmbeddingResponse:
        return await self._engine.embed(request, remaining)

    async def models(self, credential: str | None = None) -> tuple[ModelStatus, ...]:
        return self._engine.models()

    async def spend(self, query: SpendQuery, credential: str | None = None) -> SpendReport:
        return await self._engine.spend(query)

    async def budgets(self, credential: str | None = None) -> tuple[BudgetStatus, ...]:
        return await self._engine.budget_status()

    async def ready(self) -> str | None:
        return None if self._engine.models() else "no models are configured"

    async def prompt_estimate(
        self, request: ChatRequest, credential: str | None = None
    ) -> tuple[int, str]:
        route_plan = self._engine.plan(request)
        first = route_plan.candidates[0].deployment.provider.value if route_plan.candidates else ""
        return route_plan.estimated_prompt_tokens, first

    async def aclose(self) -> None:
        return None
