"""Pooled upstream HTTP connections and the mapping of transport failures.

The relay uses aiohttp rather than httpx. Measured on the 2-core reference
machine, a gRPC-to-Ollama relay spent about 1.2 ms of CPU per 20-token stream on
aiohttp against about 2.7 ms on httpx, and httpx's tail latency degraded badly
once the CPU was saturated (p99 0.3-0.6 s at 50 concurrent calls). aiohttp's
`StreamReader.readany()` also hands over everything already buffered in one
call, which is what lets the providers coalesce tokens under load.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from sidecar.config.model import Deployment
from sidecar.errors import (
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# Bounds the error bodies read from an upstream so a hostile one cannot make us buffer much.
_MAX_ERROR_BODY = 64 * 1024
# One NDJSON line or SSE event. Token frames are a few hundred bytes and a tool call
# with long arguments some tens of kilobytes; 1 MiB leaves room for any real frame
# while bounding what an upstream that never ends a line can make one call buffer.
DEFAULT_MAX_FRAME = 1024 * 1024
# After the terminal frame, how long the rest of the body (a chunked terminator, an
# SSE [DONE]) may take to arrive before the connection is closed rather than reused.
# Well-behaved servers send it at once; this only costs time with one that keeps the
# socket open, and then at most this much.
DEFAULT_LINGER = 0.1
# What may follow the terminal frame and still be read so the connection is reused.
_MAX_LINGER_BYTES = 64 * 1024
# Longest cooldown an upstream's Retry-After may ask for; the health tracker caps it
# again by its own max_cooldown.
MAX_RETRY_AFTER = 3600.0
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Statuses meaning the server does not offer an endpoint at all (rather than failing at it).
_NOT_OFFERED = frozenset({404, 405, 501})


class NotOffered(UpstreamUnavailable):
    """The upstream does not offer an optional endpoint (HTTP 404, 405 or 501)."""

    def __init__(self, deployment: str, path: str, status: int) -> None:
        super().__init__(deployment, f"{path} is not offered (HTTP {status})")
        self.path = path
        self.status = status


class HttpPool:
    """One keep-alive aiohttp session per upstream base URL, created on first use.

    Also holds the limits on what upstreams may send: `max_frame` bytes in one
    stream frame and `linger` seconds for what follows the terminal frame. Bodies
    are asked for uncompressed (`Accept-Encoding: identity`) and never inflated, so
    a compression bomb cannot make the loop inflate gigabytes.
    """

    def __init__(
        self, *, max_frame: int = DEFAULT_MAX_FRAME, linger: float = DEFAULT_LINGER
    ) -> None:
        self.max_frame = max_frame
        self.linger = linger
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def session(self, api_base: str) -> aiohttp.ClientSession:
        session = self._sessions.get(api_base)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector,
                headers={"Accept-Encoding": "identity"},
                auto_decompress=False,
                raise_for_status=False,
            )
            self._sessions[api_base] = session
        return session

    def timeout(self, deployment: Deployment) -> aiohttp.ClientTimeout:
        """The deployment's connect limit (DNS, TCP and TLS); total and read limits
        are enforced by the engine per phase (first token, idle gap, caller deadline)."""
        connect = deployment.timeouts.connect
        timeout = self._timeouts.get(connect)
        if timeout is None:
            timeout = self._timeouts[connect] = aiohttp.ClientTimeout(total=None, connect=connect)
        return timeout

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


@asynccontextmanager
async def open_stream(
    pool: HttpPool,
    deployment: Deployment,
    path: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST `body` and yield the response once it is known to be a 200.

    A non-200 reply is read (bounded) and raised as the most specific
    UpstreamError; transport failures are mapped the same way. On exit the
    response is released when it was read to the end and closed otherwise, so a
    cancelled call never returns a half-read connection to the pool.
    """
    session = pool.session(deployment.api_base)
    url = deployment.api_base + path
    try:
        response = await session.post(
            url, data=orjson.dumps(body), headers=headers, timeout=pool.timeout(deployment)
        )
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(deployment.id, f"cannot connect to {url}: {exc}") from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise UpstreamTimeout(deployment.id, f"timed out connecting to {url}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(deployment.id, f"request to {url} failed: {exc!r}") from exc
    try:
        if response.status != 200:
            raise await status_error(deployment, response)
        yield response
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamUnavailable(deployment.id, f"stream from {url} broke: {exc}") from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise UpstreamUnavailable(deployment.id, f"connection to {url} lost: {exc!r}") from exc
    finally:
        # Returns the connection to the pool only when the body was read to the
        # end; aiohttp closes it otherwise (a cancelled or broken call).
        response.release()


async def fetch_json(
    pool: HttpPool,
    deployment: Deployment,
    method: str,
    path: str,
    *,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Fetch a small JSON document from the upstream (health probes, model discovery).

    Raises NotOffered when the server has no such endpoint. The caller bounds the
    time it may take."""
    session = pool.session(deployment.api_base)
    url = deployment.api_base + path
    try:
        data = None if body is None else orjson.dumps(body)
        async with session.request(
            method, url, data=data, headers=headers, timeout=pool.timeout(deployment)
        ) as response:
            if response.status in _NOT_OFFERED:
                raise NotOffered(deployment.id, path, response.status)
            if response.status != 200:
                raise await status_error(deployment, response)
            raw = await response.content.read(_MAX_ERROR_BODY * 16)
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(deployment.id, f"{method} {url} failed: {exc}") from exc
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise malformed(deployment, f"reply to {method} {path}", raw) from exc
    if not isinstance(document, dict):
        raise malformed(deployment, f"reply to {method} {path}", raw)
    return document


async def status_error(deployment: Deployment, response: aiohttp.ClientResponse) -> UpstreamError:
    """Turn a non-200 upstream reply into the error that says what went wrong."""
    status = response.status
    try:
        raw = await response.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, ConnectionError):
        raw = b""
    detail = error_message(raw) or response.reason or "no detail"
    problem = f"upstream answered HTTP {status}: {detail}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (408, 504):
        return UpstreamTimeout(deployment.id, problem)
    if status in (400, 413, 422):
        return UpstreamRejected(deployment.id, problem)
    if status == 429:
        return UpstreamRateLimited(deployment.id, problem, retry_after=retry_after)
    # 401/403/404 mean this deployment is misconfigured (key, model not pulled);
    # 5xx are transient. Either way another deployment may answer.
    return UpstreamUnavailable(deployment.id, problem, retry_after=retry_after)


def error_message(raw: bytes) -> str:
    """The message inside an Ollama (`{"error": "..."}`) or OpenAI error body."""
    if not raw:
        return ""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip()
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return raw[:300].decode("utf-8", "replace").strip()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), at most
    MAX_RETRY_AFTER; None for anything else. Never raises, whatever the upstream sent."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        # Digits with an optional fraction, which some servers send; "inf", "nan",
        # "-5" and "1e9" are not seconds. A float of digits is finite or inf, never nan.
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def malformed(deployment: Deployment, what: str, frame: bytes) -> UpstreamMalformed:
    shown = frame[:120].decode("utf-8", "replace")
    return UpstreamMalformed(deployment.id, f"malformed {what}: {shown!r}")


async def linger(pool: HttpPool, response: aiohttp.ClientResponse) -> None:
    """After the terminal frame, read what is left of the body so the connection can
    be reused, for at most `pool.linger` seconds and a bounded number of bytes.

    Gives up quietly otherwise: the answer is complete, and releasing a response
    whose body did not end closes its connection instead of reusing it.
    """
    content = response.content
    if content.is_eof():
        return
    left = _MAX_LINGER_BYTES
    try:
        async with asyncio.timeout(pool.linger):
            while data := await content.readany():
                left -= len(data)
                if left < 0:
                    return
    except (TimeoutError, UpstreamError, aiohttp.ClientError, ConnectionError):
        return


def watch_framing(response: aiohttp.ClientResponse, deployment: Deployment) -> Callable[[], None]:
    """Make a broken transfer encoding fail the body's next read at once.

    aiohttp's C parser, on a malformed chunk, closes the connection but never
    wakes the reader of the body, which would then wait for the idle timeout. When
    the connection is lost after such a parse error and the body has neither ended
    nor failed, the body is failed as malformed here. Returns the function that
    stops watching (call it before the response is released).
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return _unwatched
    content = response.content

    def check(_: object = None) -> None:
        broken = isinstance(protocol.exception(), HttpProcessingError)
        if broken and not content.is_eof() and content.exception() is None:
            content.set_exception(
                UpstreamMalformed(deployment.id, "the upstream broke the transfer encoding")
            )

    closed = protocol.closed
    if closed is None:  # the connection was lost already
        check()
        return _unwatched
    closed.add_done_callback(check)

    def unwatch() -> None:
        closed.remove_done_callback(check)

    return unwatch


def _unwatched() -> None:
    pass
