"""`llm-sidecar status`: ask a running sidecar how its backends are doing."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.errors import SidecarError
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.rpc.codec import decode_models
from sidecar.types import ModelStatus

# States whose reason says all there is: an old error would only mislead.
_QUIET_STATES = frozenset({"up", "cold"})


async def fetch_status(address: str, timeout: float = 5.0) -> str:
    """The health table of the sidecar at host:port, as text."""
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            overall = await health.Check(request, timeout=timeout)
            models = await pb_grpc.RouterStub(channel).ListModels(
                pb.ListModelsRequest(), timeout=timeout
            )
    except grpc.aio.AioRpcError as exc:
        raise SidecarError(f"cannot reach the sidecar at {address}: {exc.details()}") from exc
    return render_status(address, overall.status, decode_models(models))


def render_status(address: str, overall: int, models: tuple[ModelStatus, ...]) -> str:
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(overall)
    lines = [f"sidecar {address}: {state}"]
    if any(model.simulated for model in models):
        lines.append("SIMULATED BACKENDS in use (see the deployments marked simulated)")
    rows = [("alias", "deployment", "locality", "state", "in flight", "ttft", "detail")]
    routed = []
    for model in models:
        if model.via:
            names = ", ".join(target.name for target in model.via)
            routed.append(f"{model.name} routes each request to one of {names}")
        for d in model.deployments:
            h = d.health
            if h is None:
                continue
            detail = h.reason
            if h.cooldown_seconds:
                left = "until rechecked" if h.state == "not_pulled" else "left"
                detail = f"{detail} ({h.cooldown_seconds:.1f}s {left})"
            if h.last_error and h.state not in _QUIET_STATES:
                detail = f"{detail}; last error: {h.last_error}"
            if h.probes_not_offered:
                offered = ", ".join(h.probes_not_offered)
                detail = (
                    f"{detail}; probes not offered: {offered}"
                    if detail
                    else (f"probes not offered: {offered}")
                )
            if d.simulated:
                detail = f"simulated; {detail}" if detail else "simulated"
            rows.append(
                (
                    model.name,
                    d.id,
                    d.locality.value,
                    h.state or "?",
                    str(h.in_flight),
                    f"{h.ttft_ms:.0f} ms" if h.ttft_ms else "-",
                    detail,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join([*lines, *routed])
