"""`llm-sidecar status`: ask a running sidecar how its backends and budgets are doing."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.errors import SidecarError
from sidecar.redaction import redact
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.rpc.codec import decode_models
from sidecar.rpc.process_codec import decode_process
from sidecar.rpc.spend_codec import decode_budget, encode_query
from sidecar.rpc.tls import ClientTls, open_channel
from sidecar.types import BudgetStatus, ModelStatus, ProcessStatus, SpendQuery

# States whose reason says all there is: an old error would only mislead.
_QUIET_STATES = frozenset({"up", "cold"})


async def fetch_status(
    address: str, master_key: str | None = None, tls: ClientTls | None = None, timeout: float = 5.0
) -> str:
    """The health table of the sidecar at host:port, as text."""
    metadata = (("authorization", f"Bearer {master_key}"),) if master_key else None
    try:
        async with open_channel(address, tls, []) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            overall = await health.Check(request, timeout=timeout)
            stub = pb_grpc.RouterStub(channel)
            models = await stub.ListModels(
                pb.ListModelsRequest(), timeout=timeout, metadata=metadata
            )
            spend = await stub.GetSpend(
                encode_query(SpendQuery(), budgets_only=True), timeout=timeout, metadata=metadata
            )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
            hint = "give the master key (--master-key, $LLM_SIDECAR_MASTER_KEY or --config)"
            raise SidecarError(f"the sidecar at {address} wants its master key: {hint}") from None
        detail = redact(exc.details() or exc.code().name, [master_key])
        raise SidecarError(f"cannot reach the sidecar at {address}: {detail}") from None
    budgets = tuple(decode_budget(b) for b in spend.budgets)
    text = render_status(address, overall.status, decode_models(models), budgets)
    process = decode_process(models)
    return text if process is None else render_process(process) + "\n" + text


def render_process(p: ProcessStatus) -> str:
    """The answering process: version, configuration, reloads, workers."""
    loaded = datetime.fromtimestamp(p.config_loaded_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    workers = (
        f"one of {p.workers} workers (health and latency below are its own)"
        if p.workers > 1
        else "1 worker"
    )
    lines = [
        f"llm-sidecar {p.version}, pid {p.pid}, {workers}" + (", DRAINING" if p.draining else ""),
        f"config {p.config_hash[:12] or '(not read from a file)'} loaded {loaded} "
        f"({p.reloads_applied} reloads applied, {p.reloads_rejected} rejected)",
    ]
    if p.last_reload_error:
        lines.append(f"last reload rejected: {redact(p.last_reload_error, limit=400)}")
    return "\n".join(lines)


def render_status(
    address: str,
    overall: int,
    models: tuple[ModelStatus, ...],
    budgets: tuple[BudgetStatus, ...] = (),
) -> str:
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
            # The sidecar redacts what it sends; this is for one that predates it.
            detail = redact(detail, limit=400)
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
    if budgets:
        lines.append("budgets (USD): remaining of cap")
        for b in budgets:
            resets = "never resets" if b.resets_at is None else f"resets in {_left(b.resets_at)}"
            lines.append(
                f"  {b.budget}: ${b.remaining:,.4f} of ${b.cap:,.2f} left "
                f"(spent ${b.spent:,.4f}, held ${b.reserved:,.4f}; {resets})"
            )
    return "\n".join([*lines, *routed])


def _left(resets_at: float) -> str:
    seconds = max(0.0, resets_at - time.time())
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"
