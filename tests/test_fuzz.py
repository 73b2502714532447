"""Fuzzing both doors: no 5xx, no crash, and good requests interleaved keep succeeding.

The sidecar (with a simulated Ollama) runs on its own event loop in a thread, so
that hypothesis drives it from plain blocking clients: http.client and raw
sockets for the bridge, a sync gRPC channel for the Router. Every example is
followed by a good request, which must still be answered. Hand-made cases cover
what random data rarely finds: smuggling-shaped heads, deep nesting in each
place JSON enters, huge echoed values. Bounded: a fixed number of examples, every
call with a timeout.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.cli.serve import SidecarProcess
from sidecar.engine import Engine
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.simulate import OllamaSimulator, profile_by_name
from tests.bridge_harness import EXPECTED, KEY
from tests.harness import make_config

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
AUTH = {"Authorization": f"Bearer {KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {KEY}"),)
# What a caller's mistake may earn; anything else from the sidecar itself is a bug.
GRPC_CALLER_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@dataclass
class Running:
    http_port: int
    grpc_port: int

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.request("POST", "/v1/chat/completions", body, {**AUTH, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def raw(self, data: bytes) -> bytes:
        """Send `data`, half-close, and read what comes back until the server closes."""
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may refuse before reading it all
            out = b""
            try:
                while chunk := sock.recv(65536):
                    out += chunk
            except ConnectionResetError:
                pass
            return out

    def assert_still_serving(self) -> None:
        body = orjson.dumps(
            {"model": "fast-local", "messages": [{"role": "user", "content": "hi"}]}
        )
        status, answer = self.post(body)
        assert status == 200, answer
        assert orjson.loads(answer)["choices"][0]["message"]["content"] == EXPECTED


@pytest.fixture
def running() -> Iterator[Running]:
    """The sidecar on a loop of its own, in a thread; stopped when the test ends."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        box["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
        async with OllamaSimulator(profile=profile_by_name("instant")) as ollama:
            config = make_config(
                [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
                general_settings={"master_key": KEY},
                limits={"http_header_timeout": 2, "http_body_timeout": 2},
            )
            server = SidecarProcess(Engine(config), grpc_port=0, http_port=0)
            await server.start()
            assert server.http_port is not None
            box["ports"] = (server.http_port, server.grpc_port)
            ready.set()
            try:
                await stop.wait()
            finally:
                await server.stop(grace=0)

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="fuzzed sidecar")
    thread.start()
    try:
        assert ready.wait(30), "the sidecar did not start"
        yield Running(*box["ports"])
    finally:
        if "stop" in box:
            box["stop"]()
        thread.join(30)
    assert not thread.is_alive()


# -- HTTP ---------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text()
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "bot", ""]) | _scalars},
    optional={"content": _json, "name": _json, "tool_calls": _json, "tool_call_id": _json},
)
_chat_body = st.fixed_dictionaries(
    {"model": st.sampled_from(["fast-local", "nope", ""]) | _scalars},
    optional={
        "messages": st.lists(_message, max_size=3) | _json,
        "stream": _json,
        "stream_options": _json,
        "metadata": _json,
        "max_tokens": _json,
        "temperature": _json,
        "top_p": _json,
        "stop": _json,
        "n": _json,
        "tools": _json,
        "tool_choice": _json,
        "response_format": _json,
        "timeout": st.floats(min_value=0.5) | _scalars,
        "x_extra": _json,
    },
)


def _encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # NaN-free but deeper than orjson will write: send it as text
        return repr(body).encode()


@FUZZ
@given(body=_chat_body)
def test_http_chat_bodies(running: Running, body: dict[str, Any]) -> None:
    status, answer = running.post(_encode(body))
    assert status < 500, answer
    if status != 200:
        assert set(orjson.loads(answer)["error"]) == {"message", "type", "param", "code"}
    running.assert_still_serving()


@FUZZ
@given(data=st.binary(max_size=2048))
def test_http_random_bodies(running: Running, data: bytes) -> None:
    status, answer = running.post(data)
    assert status < 500, answer
    running.assert_still_serving()


_VALID = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + KEY.encode()
    + b"\r\nContent-Length: 56\r\n\r\n"
    + b'{"model":"fast-local","messages":[{"role":"user","content":"hi"}]}'[:56]
)


@FUZZ
@given(
    cut=st.integers(0, len(_VALID)),
    inserted=st.binary(max_size=64),
    drop=st.integers(0, 16),
)
def test_http_mangled_requests(running: Running, cut: int, inserted: bytes, drop: int) -> None:
    data = _VALID[:cut] + inserted + _VALID[cut + drop :]
    reply = running.raw(data)
    if reply:
        status = int(reply.split(b" ", 2)[1])
        assert status < 500 or status == 503, reply[:300]
    running.assert_still_serving()


_DEEP = "[" * 300 + "]" * 300
_DEEP_OBJECT = '{"a":' * 300 + "1" + "}" * 300
HAND_MADE = [
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="cl-and-te",
    ),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        id="negative-length",
    ),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffff\r\n",
        id="huge-chunk-size",
    ),
    pytest.param(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-path"),
    pytest.param(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: \x00\x01\r\n\r\n", id="nul-header"),
    pytest.param(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n", id="huge-url"),
    pytest.param(b"GET /v1/models\r\n\r\n", id="http-0.9"),
    pytest.param(b"\r\n" * 5000, id="only-newlines"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="http2-preface"),
]


@pytest.mark.parametrize("data", HAND_MADE)
def test_http_hand_made_heads(running: Running, data: bytes) -> None:
    reply = running.raw(data)
    if reply:
        status = int(reply.split(b" ", 2)[1])
        assert status < 500, reply[:300]
        assert orjson.loads(reply.partition(b"\r\n\r\n")[2])["error"]["message"]
    running.assert_still_serving()


def _chat_with(**fields: Any) -> bytes:
    body = {"model": "fast-local", "messages": [{"role": "user", "content": "hi"}], **fields}
    return orjson.dumps(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_chat_with().replace(b'"hi"', _DEEP.encode()), id="deep-content"),
        pytest.param(
            _chat_with().replace(b"}]", b',"metadata":' + _DEEP_OBJECT.encode() + b"}]"),
            id="deep-in-message",
        ),
        pytest.param(
            b'{"model":"fast-local","metadata":{"x":' + _DEEP.encode() + b"}}", id="deep-metadata"
        ),
        pytest.param(
            b'{"model":"fast-local","x_passthrough":' + _DEEP_OBJECT.encode() + b"}",
            id="deep-passthrough",
        ),
        pytest.param(
            b'{"model":"fast-local","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function",'
            b'"function":{"name":"f","parameters":' + _DEEP_OBJECT.encode() + b"}}]}",
            id="deep-tool-parameters",
        ),
        pytest.param(b"[" * 2000 + b"]" * 2000, id="deeper-than-the-parser"),
    ],
)
def test_deep_json_is_a_400(running: Running, body: bytes) -> None:
    status, answer = running.post(body)
    assert status == 400, answer
    running.assert_still_serving()


def test_a_huge_model_name_is_not_echoed(running: Running) -> None:
    status, answer = running.post(_chat_with(model="m" * 7_000_000))
    assert status == 404
    assert len(answer) < 1000


# -- gRPC ---------------------------------------------------------------------------------


def _grpc_chat(running: Running, data: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        call = channel.unary_unary(
            "/llmsidecar.v1.Router/Chat", response_deserializer=pb.ChatResponse.FromString
        )
        try:
            call(data, timeout=10, metadata=GRPC_AUTH)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


def _grpc_still_serving(running: Running) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        request = pb.ChatRequest(
            model="fast-local", messages=[pb.Message(role="user", content="hi")]
        )
        answer = pb_grpc.RouterStub(channel).Chat(request, timeout=10, metadata=GRPC_AUTH)
    assert answer.content == EXPECTED


@FUZZ
@given(data=st.binary(max_size=1024))
def test_grpc_random_bytes(running: Running, data: bytes) -> None:
    assert _grpc_chat(running, data) in GRPC_CALLER_CODES
    _grpc_still_serving(running)


_text = st.text(max_size=40) | st.sampled_from(["fast-local", "user", "a\nb", "\x00"])


@FUZZ
@given(
    model=_text,
    roles=st.lists(_text, max_size=3),
    extra_json=st.text(max_size=80) | _json.map(lambda v: _encode(v).decode("utf-8", "replace")),
    request_id=_text,
    metadata=st.dictionaries(_text, _text, max_size=3),
    max_tokens=st.none() | st.integers(-(2**31), 2**31 - 1),
    temperature=st.none() | st.floats(width=32),
)
def test_grpc_random_requests(
    running: Running,
    model: str,
    roles: list[str],
    extra_json: str,
    request_id: str,
    metadata: dict[str, str],
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    params = pb.GenerationParams(max_tokens=max_tokens, temperature=temperature)
    request = pb.ChatRequest(
        model=model,
        messages=[pb.Message(role=role, content="hi") for role in roles],
        params=params,
        extra_json=extra_json,
        request_id=request_id,
        metadata=metadata,
    )
    assert _grpc_chat(running, request.SerializeToString()) in GRPC_CALLER_CODES
    _grpc_still_serving(running)
