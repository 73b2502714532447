"""What the bridge can say about the models behind it, whichever backend it talks to.

In-process it is read from the configuration; in front of a remote sidecar from
its ListModels answer. Both give the same views, so /v1/models and /health look
the same in either mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.api import router_pb2 as pb
from sidecar.config.model import SidecarConfig
from sidecar.types import Locality

_LOCALITY_FROM_PB = {pb.LOCALITY_LOCAL: Locality.LOCAL, pb.LOCALITY_CLOUD: Locality.CLOUD}


@dataclass(frozen=True, slots=True)
class DeploymentView:
    id: str
    provider: str
    upstream_model: str
    locality: Locality
    api_base: str
    context_window: int | None
    simulated: bool


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


def from_config(config: SidecarConfig) -> tuple[ModelView, ...]:
    return tuple(
        ModelView(
            name=group.name,
            description=group.description,
            deployments=tuple(
                DeploymentView(
                    id=d.id,
                    provider=d.provider.value,
                    upstream_model=d.upstream_model,
                    locality=d.locality,
                    api_base=d.api_base,
                    context_window=d.context_window,
                    simulated=d.simulated,
                )
                for d in group.deployments
            ),
        )
        for group in config.groups.values()
    )


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
                )
                for d in model.deployments
            ),
        )
        for model in message.models
    )
