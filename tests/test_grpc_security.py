"""The gRPC door: the master key, TLS and mutual TLS, and requests refused before any work.

Generated stubs and the standard health and reflection clients over real sockets;
certificates are made per test by trustme.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bridge.remote import RemoteBackend
from bridge.server import BridgeServer
from sidecar.cli.serve import SidecarProcess
from sidecar.cli.status import fetch_status
from sidecar.config import SidecarConfig
from sidecar.engine import Engine
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.rpc.tls import ClientTls, ServerTls, open_channel
from sidecar.simulate import OllamaSimulator
from tests.harness import chat_request, make_config, running_sidecar

KEY = "sk-grpc-master"
AUTH = (("authorization", f"Bearer {KEY}"),)


@pytest.fixture
def keyed(ollama: OllamaSimulator) -> SidecarConfig:
    return make_config(
        [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
        general_settings={"master_key": KEY},
    )


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


async def _stream_code(call: Any) -> grpc.StatusCode:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param((), grpc.StatusCode.UNAUTHENTICATED, id="none"),
        pytest.param(
            (("authorization", "Bearer nope"),), grpc.StatusCode.UNAUTHENTICATED, id="wrong"
        ),
        pytest.param((("authorization", KEY),), grpc.StatusCode.UNAUTHENTICATED, id="no-scheme"),
        pytest.param(
            (("authorization", f"Bearer {KEY}"), ("authorization", "Bearer nope")),
            grpc.StatusCode.UNAUTHENTICATED,
            id="twice",
        ),
        pytest.param((("authorization", f"bearer {KEY}"),), grpc.StatusCode.OK, id="lowercase"),
        pytest.param(AUTH, grpc.StatusCode.OK, id="right"),
    ],
)
async def test_every_router_method_wants_the_key(
    keyed: SidecarConfig, metadata: tuple[tuple[str, str], ...], expected: grpc.StatusCode
) -> None:
    async with running_sidecar(keyed) as sidecar:
        stub = sidecar.stub
        request = chat_request("fast-local")
        codes = [
            await _code(stub.Chat(request, timeout=5, metadata=metadata)),
            await _stream_code(stub.StreamChat(request, timeout=5, metadata=metadata)),
            await _code(stub.Route(request, timeout=5, metadata=metadata)),
            await _code(stub.ListModels(pb.ListModelsRequest(), timeout=5, metadata=metadata)),
        ]
        assert codes == [expected] * 4


async def test_reflection_is_protected_and_health_is_open(keyed: SidecarConfig) -> None:
    async with running_sidecar(keyed) as sidecar:
        reflection = reflection_pb2_grpc.ServerReflectionStub(sidecar.channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        refused = reflection.ServerReflectionInfo(iter([ask]), timeout=5)
        assert await _stream_code(refused) is grpc.StatusCode.UNAUTHENTICATED
        allowed = reflection.ServerReflectionInfo(iter([ask]), timeout=5, metadata=AUTH)
        assert await _stream_code(allowed) is grpc.StatusCode.OK
        health = health_pb2_grpc.HealthStub(sidecar.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_without_a_master_key_grpc_is_open(ollama: OllamaSimulator) -> None:
    config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
    async with running_sidecar(config) as sidecar:
        listed = await sidecar.stub.ListModels(pb.ListModelsRequest(), timeout=5)
        assert "fast-local" in [m.name for m in listed.models]


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
async def test_the_standalone_bridge_passes_its_callers_key_on(
    keyed: SidecarConfig, header: str
) -> None:
    # A bridge with no key of its own, in front of a keyed sidecar: the sidecar decides.
    async with running_sidecar(keyed) as sidecar:
        backend = RemoteBackend(f"127.0.0.1:{sidecar.server.grpc_port}")
        async with BridgeServer(backend, port=0) as bridge, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{bridge.port}/v1/chat/completions"
            body = {"model": "fast-local", "messages": [{"role": "user", "content": "hi"}]}
            value = f"Bearer {KEY}" if header == "Authorization" else KEY
            for headers, expected in (({header: value}, 200), ({}, 401), ({header: "x"}, 401)):
                async with http.post(url, json=body, headers=headers) as response:
                    assert response.status == expected, await response.text()
                    answer = await response.json()
                if expected == 401:
                    assert answer["error"]["code"] == "invalid_api_key"
                else:
                    assert answer["choices"][0]["message"]["content"].startswith("tok0")


# -- refused before any work --------------------------------------------------------------


async def _raw_chat(channel: grpc.aio.Channel, data: bytes) -> grpc.aio.AioRpcError:
    call = channel.unary_unary(
        "/llmsidecar.v1.Router/Chat", response_deserializer=pb.ChatResponse.FromString
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call(data, timeout=5, metadata=AUTH)
    return failed.value


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff\xff", id="corrupt"),
        pytest.param(b"\x0a\x02\xff\xfe", id="model-not-utf8"),
        pytest.param(b"\x12\x04\x0a\x02\xc3\x28", id="message-role-not-utf8"),
    ],
)
async def test_undecodable_protobuf_is_invalid_argument(
    keyed: SidecarConfig, ollama: OllamaSimulator, data: bytes
) -> None:
    async with running_sidecar(keyed) as sidecar:
        error = await _raw_chat(sidecar.channel, data)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid llmsidecar.v1.ChatRequest message" in (error.details() or "")
    assert ollama.stats.requests == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"request_id": "a\nb"}, "request_id", id="id-newline"),
        pytest.param({"request_id": "a\x00b"}, "request_id", id="id-nul"),
        pytest.param({"request_id": "x" * 129}, "request_id", id="id-long"),
        pytest.param({"extra_json": "[" * 300 + "]" * 300}, "extra_json", id="extra-deep-array"),
        pytest.param(
            {"extra_json": '{"a":' * 100 + "1" + "}" * 100}, "extra_json", id="extra-deep-object"
        ),
        pytest.param({"extra_json": '{"a": nope}'}, "extra_json", id="extra-not-json"),
    ],
)
async def test_bad_fields_are_refused_before_the_upstream_is_called(
    keyed: SidecarConfig, ollama: OllamaSimulator, fields: dict[str, str], named: str
) -> None:
    async with running_sidecar(keyed) as sidecar:
        request = chat_request("fast-local", **fields)
        for call in (sidecar.stub.Chat, sidecar.stub.StreamChat):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                result = call(request, timeout=5, metadata=AUTH)
                if call is sidecar.stub.Chat:
                    await result
                else:
                    async for _ in result:
                        pass
            assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (failed.value.details() or "").startswith(f"{named}: ")
    assert ollama.stats.requests == 0


async def test_a_huge_model_name_is_not_echoed(keyed: SidecarConfig) -> None:
    async with running_sidecar(keyed) as sidecar:
        request = chat_request("m" * 7_000_000)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await sidecar.stub.Chat(request, timeout=10, metadata=AUTH)
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND
        assert len(failed.value.details() or "") < 300


# -- TLS --------------------------------------------------------------------------------


class Pki:
    def __init__(self, root: Path) -> None:
        ca = trustme.CA()
        self.ca = str(root / "ca.pem")
        ca.cert_pem.write_to_path(self.ca)
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert, self.server_key = str(root / "server.pem"), str(root / "server.key")
        server.cert_chain_pems[0].write_to_path(self.server_cert)
        server.private_key_pem.write_to_path(self.server_key)
        client = ca.issue_cert("client@example.com")
        self.client_cert, self.client_key = str(root / "client.pem"), str(root / "client.key")
        client.cert_chain_pems[0].write_to_path(self.client_cert)
        client.private_key_pem.write_to_path(self.client_key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def _tls_sidecar(config: SidecarConfig, tls: ServerTls) -> AsyncIterator[SidecarProcess]:
    server = SidecarProcess(Engine(config), grpc_port=0, grpc_tls=tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def _list(target: str, tls: ClientTls | None) -> grpc.StatusCode:
    async with open_channel(target, tls, []) as channel:
        stub = pb_grpc.RouterStub(channel)
        return await _code(stub.ListModels(pb.ListModelsRequest(), timeout=3, metadata=AUTH))


async def test_tls(keyed: SidecarConfig, pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key)
    async for server in _tls_sidecar(keyed, tls):
        target = f"127.0.0.1:{server.grpc_port}"
        assert await _list(target, ClientTls(pki.ca)) is grpc.StatusCode.OK
        assert await _list(target, None) is grpc.StatusCode.UNAVAILABLE
        status = await fetch_status(target, KEY, ClientTls(pki.ca))
        assert "SERVING" in status


async def test_mutual_tls(keyed: SidecarConfig, pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, client_ca=pki.ca)
    async for server in _tls_sidecar(keyed, tls):
        target = f"127.0.0.1:{server.grpc_port}"
        with_cert = ClientTls(pki.ca, pki.client_cert, pki.client_key)
        assert await _list(target, with_cert) is grpc.StatusCode.OK
        assert await _list(target, ClientTls(pki.ca)) is grpc.StatusCode.UNAVAILABLE
