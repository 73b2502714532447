"""`llm-sidecar health`: the standard gRPC health check, for a container's HEALTHCHECK.

Exit 0 when the service is SERVING, 1 otherwise (NOT_SERVING while draining, unknown
service, or nothing answering), like grpc_health_probe. The health service needs no key.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.rpc.tls import ClientTls, open_channel


async def check_health(
    address: str, service: str = "", tls: ClientTls | None = None, timeout: float = 3.0
) -> tuple[bool, str]:
    """(serving, what to print) for `service` ("" is the whole sidecar) at host:port."""
    try:
        async with open_channel(address, tls, []) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.aio.AioRpcError as exc:
        return False, f"{address}: {exc.code().name}"
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {state}"
