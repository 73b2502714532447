"""What every provider offers the engine: one streaming call, embeddings, one free probe."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from sidecar.config.model import Deployment
from sidecar.types import ChatRequest, Chunk, EmbeddingRequest, Embeddings


class ProbeStatus(enum.Enum):
    """What a health probe learned; it reports only what the server told it."""

    READY = "ready"  # reachable, and the model is there (and loaded, where that is known)
    COLD = "cold"  # reachable, the model is there but not loaded: the next answer is slower
    NOT_PULLED = "not_pulled"  # reachable, but the server says it does not have the model
    FAILED = "failed"  # unreachable, timed out or a 5xx
    UNKNOWN = "unknown"  # nothing learned (a reply in a shape the probe does not know)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of a health probe that cost no tokens."""

    status: ProbeStatus
    detail: str = ""
    # Probe endpoints the server answered 404/405/501: it does not offer them.
    not_offered: tuple[str, ...] = ()
    # Every probe endpoint is skipped or not offered: there is nothing left to probe.
    exhausted: bool = False


class Provider(Protocol):
    """Translates canonical requests to one upstream wire protocol and back.

    Built with the shared `HttpPool` (see registry.py). `stream` returns an async
    iterator of chunks. It yields only chunks that carry something (text, tool
    calls, or the final finish reason and usage), and merges frames that were
    already buffered into one chunk. It raises `UpstreamError` subclasses naming
    the deployment, and releases the upstream connection when closed early.

    `completes_text` says whether the upstream has a text-completion endpoint: a
    request marked `completion` is then sent there as a raw prompt, and otherwise
    answered as a chat turn.
    """

    @property
    def completes_text(self) -> bool: ...

    def stream(
        self, deployment: Deployment, request: ChatRequest
    ) -> AsyncGenerator[Chunk, None]: ...

    async def embed(self, deployment: Deployment, request: EmbeddingRequest) -> Embeddings:
        """Embed the whole batch in one upstream call, one vector per input in order.

        A protocol without embeddings raises `EmbeddingUnsupported`; other failures
        raise `UpstreamError`s as `stream` does.
        """
        ...

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult:
        """Whether the deployment can answer, asked in a way that costs no tokens,
        leaving out the probe endpoints in `skip` (those found not offered before).

        May raise `UpstreamError`; the registry turns that into a failed result.
        """
        ...
