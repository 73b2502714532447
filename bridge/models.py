"""What the bridge can say about the models behind it, whichever backend it talks to.

Both backends go through the gRPC ListModels message (in-process it is built
from the engine's configuration and health tracker without leaving the
process), so /v1/models and /health look the same in either mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.rpc.api import router_pb2 as pb
from sidecar.types import Locality

_LOCALITY_FROM_PB = {pb.LOCALITY_LOCAL: Locality.LOCAL, pb.LOCALITY_CLOUD: Locality.CLOUD}


@dataclass(frozen=True, slots=True)
class HealthView:
    """The health tracker's view of one deployment (sidecar/health.py)."""

    state: str  # up | cooling | half_open | busy
    reason: str
    in_flight: int
    ttft_ms: float | None  # moving average; None before the first answer
    cooldown_seconds: float
    last_error: str


@dataclass(frozen=True, slots=True)
class DeploymentView:
    id: str
    provider: str
    upstream_model: str
    locality: Locality
    api_base: str
    context_window: int | None
    simulated: bool
    health: HealthView | None = None


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    description: str
    deployments: tuple[DeploymentView, ...]

    @property
    def locality(self) -> str:
        """ "local", "cloud", or "mixed" when the alias has deployments of both kinds."""
        kinds = {d.locality for d in self.deployments}
        if len(kinds) == 1:
            return next(iter(kinds)).value
        return "mixed" if kinds else "unknown"

    @property
    def simulated(self) -> bool:
        return any(d.simulated for d in self.deployments)


def from_pb(message: pb.ListModelsResponse) -> tuple[ModelView, ...]:
    return tuple(
        ModelView(
            name=model.name,
            description=model.description,
            deployments=tuple(
                DeploymentView(
                    id=d.deployment,
                    provider=d.provider,
                    upstream_model=d.upstream_model,
                    locality=_LOCALITY_FROM_PB.get(d.locality, Locality.CLOUD),
                    api_base=d.api_base,
                    context_window=d.context_window or None,
                    simulated=d.simulated,
                    health=_health(d.health) if d.HasField("health") else None,
                )
                for d in model.deployments
            ),
        )
        for model in message.models
    )


def _health(message: pb.DeploymentHealth) -> HealthView:
    return HealthView(
        state=message.state,
        reason=message.reason,
        in_flight=message.in_flight,
        ttft_ms=message.ttft_ms or None,
        cooldown_seconds=message.cooldown_seconds,
        last_error=message.last_error,
    )
