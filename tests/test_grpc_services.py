"""The standard services beside Router: health checking and server reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar.config import SidecarConfig
from sidecar.grpc_server import SERVICE_NAME
from tests.harness import make_config, running_sidecar


@pytest.fixture
def config() -> SidecarConfig:
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": "http://127.0.0.1:9"}),
            ("cloud-fast", "gpt-4o-mini", {"api_key": "sk-x"}),
        ]
    )


async def test_health_reports_overall_service_and_model_groups(config: SidecarConfig) -> None:
    async with running_sidecar(config) as sidecar:
        stub = health_pb2_grpc.HealthStub(sidecar.channel)
        for service in ("", SERVICE_NAME, "fast-local", "cloud-fast"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_services(config: SidecarConfig) -> None:
    async with running_sidecar(config) as sidecar:
        stub = reflection_pb2_grpc.ServerReflectionStub(sidecar.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = []
        async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5):
            names = [s.name for s in reply.list_services_response.service]
        assert SERVICE_NAME in names
        assert "grpc.health.v1.Health" in names
        # The contract itself is discoverable, e.g. by grpcurl.
        file_request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
        async for reply in stub.ServerReflectionInfo(iter([file_request]), timeout=5):
            assert reply.file_descriptor_response.file_descriptor_proto
