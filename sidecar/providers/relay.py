"""The one stream loop every provider shares: read, split into frames, fold, yield.

A provider supplies a frame reader (NDJSON lines, SSE events) and a decoder that
folds its protocol's frames into the chunk being built. The loop then gives every
provider the same behaviour:

- Coalescing. Each read hands over everything already buffered, and all of it
  goes out as one chunk; a lone token is never held back waiting for more.
- A bad frame still lets the frames that arrived whole before it reach the caller.
- The answer ends at the protocol's terminal frame, whatever the upstream then
  does with the socket: the rest of the body gets a short, bounded `linger` so the
  connection can be reused, and is otherwise closed.
- Limits: one frame may not grow past `HttpPool.max_frame`, and a compressed body
  (which was not asked for) is refused before it is read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sidecar.config.model import Deployment
from sidecar.errors import UpstreamError, UpstreamMalformed
from sidecar.providers.http import HttpPool, linger, open_stream, watch_framing
from sidecar.types import Chunk, ThinkingBlock, ToolCall, Usage

F = TypeVar("F")
F_co = TypeVar("F_co", covariant=True)
F_contra = TypeVar("F_contra", contravariant=True)


class Draft:
    """The chunk being built from the frames of one read.

    Text, tool calls and reasoning go out with every chunk; the finish reason and
    usage are kept until the final one. `ready` says whether there is anything to send.
    """

    __slots__ = ("calls", "finish", "reasoning", "text", "thinking", "usage")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.reasoning: list[str] = []
        self.thinking: list[ThinkingBlock] = []

    @property
    def ready(self) -> bool:
        return bool(self.text or self.calls or self.reasoning or self.thinking)

    def take(self) -> Chunk:
        chunk = Chunk("".join(self.text), tuple(self.calls))
        self.text.clear()
        self.calls.clear()
        # Only thinking models fill these: other streams pay two truth tests per chunk.
        if self.reasoning:
            chunk.reasoning = "".join(self.reasoning)
            self.reasoning.clear()
        if self.thinking:
            chunk.thinking = tuple(self.thinking)
            self.thinking.clear()
        return chunk

    def final(self) -> Chunk:
        chunk = self.take()
        chunk.finish_reason = self.finish or "stop"
        chunk.usage = self.usage
        return chunk


class FrameReader(Protocol[F_co]):
    @property
    def max_frame(self) -> int: ...

    @property
    def overflow(self) -> bool:
        """True once a frame grew past `max_frame`."""
        ...

    @property
    def rest(self) -> bytes:
        """The unfinished frame the stream stopped inside, if any."""
        ...

    def feed(self, data: bytes) -> Sequence[F_co]: ...


class Decoder(Protocol[F_contra]):
    """One call's view of a protocol: frames in, the draft chunk filled."""

    def fold(self, frame: F_contra, draft: Draft) -> bool:
        """Fold one frame into `draft`; True when it is the protocol's last frame."""
        ...

    def end(self, draft: Draft, rest: bytes) -> Chunk:
        """The body ended before a terminal frame: the final chunk when the answer
        is complete anyway, otherwise raise UpstreamMalformed."""
        ...


async def relay(
    pool: HttpPool,
    deployment: Deployment,
    path: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    reader: FrameReader[F],
    decoder: Decoder[F],
) -> AsyncGenerator[Chunk, None]:
    """POST `body` to the deployment and yield the answer's chunks."""
    async with open_stream(pool, deployment, path, body, headers) as response:
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise UpstreamMalformed(
                deployment.id, "the upstream sent a compressed stream although none was accepted"
            )
        unwatch = watch_framing(response, deployment)
        try:
            draft = Draft()
            read = response.content.readany
            while data := await read():
                for frame in reader.feed(data):
                    try:
                        done = decoder.fold(frame, draft)
                    except UpstreamError:
                        if draft.ready:
                            yield draft.take()
                        raise
                    if done:
                        yield draft.final()
                        await linger(pool, response)
                        return
                if draft.ready:
                    yield draft.take()
                if reader.overflow:
                    raise UpstreamMalformed(
                        deployment.id,
                        f"one stream frame grew past the limit of {reader.max_frame:,} bytes",
                    )
            yield decoder.end(draft, reader.rest)
        finally:
            unwatch()
