"""What every provider offers the engine: one streaming call, canonical in and out."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from sidecar.config.model import Deployment
from sidecar.types import ChatRequest, Chunk


class Provider(Protocol):
    """Translates canonical requests to one upstream wire protocol and back.

    `stream` returns an async iterator of chunks. It yields only chunks that
    carry something (text, tool calls, or the final finish reason and usage), and
    merges frames that were already buffered into one chunk. It raises
    `UpstreamError` subclasses naming the deployment, and releases the upstream
    connection when closed early.
    """

    def stream(
        self, deployment: Deployment, request: ChatRequest
    ) -> AsyncGenerator[Chunk, None]: ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of a health probe that cost no tokens."""

    ok: bool
    detail: str = ""
    busy: bool = False  # reachable, but the next answer will be slow (model loading)


class LineSplitter:
    """Splits a byte stream into complete lines, keeping the unfinished tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        return lines

    @property
    def tail(self) -> bytes:
        return self._tail
