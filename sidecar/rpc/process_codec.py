"""The serving process's own status (version, configuration, reloads, workers) on the
ListModels answer, in its fields 50-59."""

from __future__ import annotations

from sidecar.rpc.api import router_pb2 as pb
from sidecar.types import ProcessStatus


def add_process(response: pb.ListModelsResponse, status: ProcessStatus) -> pb.ListModelsResponse:
    response.version = status.version
    response.config_hash = status.config_hash
    response.config_loaded_at = status.config_loaded_at
    response.workers = status.workers
    response.pid = status.pid
    response.reloads_applied = status.reloads_applied
    response.reloads_rejected = status.reloads_rejected
    response.last_reload_error = status.last_reload_error
    response.draining = status.draining
    return response


def decode_process(response: pb.ListModelsResponse) -> ProcessStatus | None:
    """None from a sidecar too old to say."""
    if not response.version:
        return None
    return ProcessStatus(
        version=response.version,
        config_hash=response.config_hash,
        config_loaded_at=response.config_loaded_at,
        workers=response.workers,
        pid=response.pid,
        reloads_applied=response.reloads_applied,
        reloads_rejected=response.reloads_rejected,
        last_reload_error=response.last_reload_error,
        draining=response.draining,
    )
