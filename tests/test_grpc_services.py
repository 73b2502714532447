"""The standard services beside Router: health checking and server reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar.config import SidecarConfig
from sidecar.rpc.servicer import SERVICE_NAME
from sidecar.simulate import Fault, OllamaSimulator, profile_by_name
from tests.harness import make_config, running_sidecar


@pytest.fixture
def config() -> SidecarConfig:
    return make_config(
        [
            ("fast-local", "ollama/llama3.2:8b", {"api_base": "http://127.0.0.1:9"}),
            ("cloud-fast", "gpt-4o-mini", {"api_key": "sk-x"}),
        ]
    )


async def _status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def _watch_until(
    stub: health_pb2_grpc.HealthStub, service: str, status: int, within: float = 5.0
) -> bool:
    """Watch `service` until it reports `status`; False if it did not within `within` s."""
    call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=within)
    try:
        async for reply in call:
            if reply.status == status:
                return True
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return False
        raise
    finally:
        call.cancel()
    return False


async def test_health_follows_probes_per_model_group() -> None:
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    async with OllamaSimulator(profile=profile_by_name("instant")) as up:
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": up.base_url}),
                # Port 9 (discard) has no listener here: its probes fail.
                ("strong-local", "ollama/llama3.3:70b", {"api_base": "http://127.0.0.1:9"}),
            ],
            health={"probe_interval": 0.05, "cooldown": 0.1},
        )
        async with running_sidecar(config) as sidecar:
            stub = health_pb2_grpc.HealthStub(sidecar.channel)
            assert await _watch_until(stub, "strong-local", not_serving)
            statuses = {
                service: await _status(stub, service)
                for service in ("", SERVICE_NAME, "fast-local", "strong-local")
            }
            assert statuses == {
                "": serving,
                SERVICE_NAME: serving,
                "fast-local": serving,
                "strong-local": not_serving,
            }
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

            # With every backend down, the Router itself stops serving.
            await up.set_fault(Fault("refuse"))
            assert await _watch_until(stub, SERVICE_NAME, not_serving)
            assert await _status(stub, "fast-local") == not_serving
            assert await _status(stub, "") == serving


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
