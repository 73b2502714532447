"""Connection abuse against both doors: every limit fires, and other callers keep being served.

Raw sockets send exactly the bytes of each attack (slowloris, a stalled body, an
idle connection, huge or too many headers, too many connections, garbage);
meanwhile a well-behaved client is served. Limits are set small in the config's
`limits` section so that each fires quickly; no test measures time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from sidecar.cli.serve import SidecarProcess
from sidecar.engine import Engine
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.simulate import Fault, OllamaSimulator
from tests.bridge_harness import EXPECTED, KEY, USER
from tests.harness import chat_request, make_config, wait_until

LIMITS = {
    "http_header_timeout": 0.5,
    "http_body_timeout": 0.5,
    "http_keep_alive": 1,
    "http_max_header_bytes": 8192,
    "http_max_headers": 30,
    "http_max_connections": 16,
}
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
CHAT = orjson.dumps({"model": "fast-local", "messages": USER})


@pytest.fixture
async def sidecar(ollama: OllamaSimulator) -> AsyncIterator[SidecarProcess]:
    async with _serving(ollama, LIMITS) as server:
        yield server


@contextlib.asynccontextmanager
async def _serving(
    ollama: OllamaSimulator, limits: dict[str, Any]
) -> AsyncIterator[SidecarProcess]:
    config = make_config(
        [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
        general_settings={"master_key": KEY},
        limits=limits,
    )
    server = SidecarProcess(Engine(config), grpc_port=0, http_port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def _read_all(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything until the server closes the connection (bounded in time and size)."""
    data = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            data += chunk
            assert len(data) < 1_000_000
    return data


def _status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower()
    error: dict[str, Any] = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape
    return status, error


async def _good_call(server: SidecarProcess) -> str:
    url = f"http://127.0.0.1:{server.http_port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=CHAT, headers=headers) as response,
    ):
        assert response.status == 200
        answer = await response.json()
    content: str = answer["choices"][0]["message"]["content"]
    return content


async def test_slowloris_is_cut_off_while_others_are_served(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    writer.write(HEAD + b"\r\n")

    async def trickle() -> None:
        # One header byte at a time, for at most 10 s: the server must give up first.
        with contextlib.suppress(ConnectionError):
            for byte in b"X-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    slow = asyncio.create_task(trickle())
    try:
        assert await _good_call(sidecar) == EXPECTED
        status, error = _status_and_error(await _read_all(reader))
    finally:
        slow.cancel()
        writer.close()
    assert (status, error["code"]) == (408, "request_timeout")
    assert await _good_call(sidecar) == EXPECTED


async def test_an_idle_connection_is_closed(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    try:
        status, _ = _status_and_error(await _read_all(reader))
    finally:
        writer.close()
    assert status == 408


async def test_a_kept_alive_connection_closes_when_idle(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    length = f"\r\nContent-Length: {len(CHAT)}\r\n\r\n".encode()
    writer.write(HEAD + length + CHAT)
    try:
        raw = await _read_all(reader)  # the answer, then the close after the idle time
    finally:
        writer.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert EXPECTED.encode() in raw


async def test_a_stalled_body_is_cut_off(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    # Content-Length promises more than is ever sent.
    writer.write(HEAD + b"\r\nContent-Length: 1000\r\n\r\n" + CHAT[:10])
    try:
        status, error = _status_and_error(await _read_all(reader))
    finally:
        writer.close()
    assert (status, error["code"]) == (408, "request_timeout")
    assert "body" in error["message"]
    assert await _good_call(sidecar) == EXPECTED


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"X-Big: " + b"a" * 4_000_000 + b"\r\n", id="one-huge-header"),
        pytest.param(b"".join(b"X-%d: v\r\n" % i for i in range(40)), id="too-many-headers"),
        pytest.param(b"X-" + b"b" * 20_000, id="unfinished-huge-line"),
    ],
)
async def test_oversized_heads_get_431(sidecar: SidecarProcess, extra: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(HEAD + b"\r\n" + extra + b"\r\n")
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        status, error = _status_and_error(await _read_all(reader))
    finally:
        sending.cancel()
        writer.close()
    assert (status, error["code"]) == (431, "request_header_fields_too_large")
    assert await _good_call(sidecar) == EXPECTED


async def test_garbage_gets_400_in_openai_shape(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP\r\n\r\n")
    try:
        status, error = _status_and_error(await _read_all(reader))
    finally:
        writer.close()
    assert (status, error["code"]) == (400, "invalid_http")


async def test_past_the_connection_limit_new_connections_get_503(
    ollama: OllamaSimulator,
) -> None:
    limits = {**LIMITS, "http_header_timeout": 30, "http_max_connections": 8}
    async with _serving(ollama, limits) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.http_port) for _ in range(8)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
            writer.write(HEAD + b"\r\nContent-Length: 2\r\n\r\n{}")
            raw = await _read_all(reader)
            writer.close()
            status, error = _status_and_error(raw)
            assert (status, error["code"]) == (503, "too_many_connections")
            assert b"retry-after: 1" in raw.lower()
            # The connections already open are still served.
            held_reader, held_writer = held[0]
            length = f"\r\nConnection: close\r\nContent-Length: {len(CHAT)}\r\n\r\n".encode()
            held_writer.write(HEAD + length + CHAT)
            answer = await _read_all(held_reader)
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            for _, held_writer in held:
                held_writer.close()
        # Once they are gone, new callers are served again.
        async with asyncio.timeout(5):
            while True:
                try:
                    assert await _good_call(server) == EXPECTED
                    break
                except AssertionError:
                    await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("Authorization", f"Bearer {KEY}")], 200, id="authorization"),
        pytest.param([("x-api-key", KEY)], 200, id="x-api-key"),
        pytest.param([("api-key", KEY)], 200, id="api-key"),
        pytest.param([("x-api-key", "wrong")], 401, id="x-api-key-wrong"),
        pytest.param(
            [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {KEY}")],
            400,
            id="authorization-twice",
        ),
        pytest.param([("api-key", KEY), ("api-key", KEY)], 400, id="api-key-twice"),
    ],
)
async def test_key_headers(
    sidecar: SidecarProcess, headers: list[tuple[str, str]], expected: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.http_port)
    lines = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + lines
    writer.write(head + f"Content-Length: {len(CHAT)}\r\n\r\n".encode() + CHAT)
    try:
        raw = await _read_all(reader)
    finally:
        writer.close()
    assert int(raw.split(b" ", 2)[1]) == expected
    if expected == 400:
        assert _status_and_error(raw)[1]["code"] == "duplicate_header"


async def test_grpc_past_max_concurrent_rpcs_is_resource_exhausted(
    ollama: OllamaSimulator,
) -> None:
    ollama.fault = Fault("hang")
    async with _serving(ollama, {"grpc_max_concurrent_rpcs": 2}) as server:
        target = f"127.0.0.1:{server.grpc_port}"
        auth = (("authorization", f"Bearer {KEY}"),)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.RouterStub(channel)
            hanging = [
                stub.StreamChat(chat_request("fast-local"), timeout=10, metadata=auth)
                for _ in range(2)
            ]
            try:
                assert await wait_until(lambda: ollama.stats.in_flight == 2, within=5)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Chat(chat_request("fast-local"), timeout=5, metadata=auth)
                assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                for call in hanging:
                    call.cancel()
