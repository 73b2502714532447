"""The configuration snapshot: one configuration with its compiled routing policy.

This is the unit a reload swaps: every call plans against one snapshot from
start to end. It lives in the engine rather than in `config/` because it joins
the configuration with routing, which itself reads the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.config.model import SidecarConfig
from sidecar.health import HealthTracker
from sidecar.redaction import redact
from sidecar.routing import RoutingPolicy, compile_routing
from sidecar.types import DeploymentStatus, HealthStatus, ModelStatus


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: SidecarConfig
    policy: RoutingPolicy

    @classmethod
    def build(cls, config: SidecarConfig, previous: Snapshot | None = None) -> Snapshot:
        """`previous`, on a reload, lends what did not change (the privacy detector)."""
        return cls(config, compile_routing(config, previous.policy if previous else None))

    def models(self, health: HealthTracker) -> tuple[ModelStatus, ...]:
        """Every alias; the auto alias last, with the aliases it routes to."""
        models = self._groups(health)
        tiers = self.policy.tiers
        if not tiers:
            return models
        by_name = {model.name: model for model in models}
        targets = dict.fromkeys(target.alias for target in tiers.values())
        auto = ModelStatus(
            name=self.policy.auto_alias,
            description="routes each request to the alias its content calls for",
            deployments=(),
            via=tuple(by_name[name] for name in targets if name in by_name),
        )
        return (*models, auto)

    def _groups(self, health: HealthTracker) -> tuple[ModelStatus, ...]:
        """Every configured alias; what health says is redacted once more here, as it
        goes to callers (`ListModels`, `/health`, `llm-sidecar status`)."""
        secrets = self.config.secrets
        return tuple(
            ModelStatus(
                name=group.name,
                description=group.description,
                deployments=tuple(
                    DeploymentStatus(
                        id=d.id,
                        provider=d.provider.value,
                        upstream_model=d.upstream_model,
                        locality=d.locality,
                        api_base=d.api_base,
                        context_window=d.context_window,
                        simulated=d.simulated,
                        health=_health(health, d.id, secrets),
                    )
                    for d in group.deployments
                ),
            )
            for group in self.config.groups.values()
        )


def _health(tracker: HealthTracker, deployment_id: str, secrets: Sequence[str]) -> HealthStatus:
    h = tracker[deployment_id]
    return HealthStatus(
        state=h.state.value,
        reason=redact(h.reason, secrets),
        in_flight=h.in_flight,
        ttft_ms=None if h.ttft is None else h.ttft * 1000,
        cooldown_seconds=tracker.cooldown_left(deployment_id),
        last_error=redact(h.last_error, secrets, limit=1000),
        probes_not_offered=h.probes_not_offered,
    )
