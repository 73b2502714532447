"""Which spend caps a cloud call counts toward, from the configuration.

    global                      general_settings.max_budget + budget_duration (the seed's)
    global/litellm              litellm_settings.max_budget + budget_duration (LiteLLM's)
    model_group:<alias>         model_info.max_budget + budget_duration of the group's entries
    deployment:<id>             litellm_params.max_budget + budget_duration (one deployment)
    provider:<name>             router_settings.provider_budget_config
    caller:<id>                 budget.callers, else budget.default_caller, else
                                litellm_settings.max_end_user_budget (never resets)

Local deployments count toward none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config.model import Deployment, SidecarConfig, SpendCap
from sidecar.errors import ConfigError
from sidecar.types import Locality

MICROS_PER_USD = 10**6


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    cap: int  # micro-dollars
    duration: str | None  # None: never resets

    @property
    def cap_usd(self) -> float:
        return self.cap / MICROS_PER_USD


def _budget(budget_id: str, cap: SpendCap) -> Budget:
    return Budget(budget_id, round(cap.max_budget * MICROS_PER_USD), cap.duration)


class BudgetBook:
    """Every configured cap, and the ones each (deployment, caller) pair counts toward."""

    __slots__ = ("_callers", "_default_caller", "_deployments", "_fixed", "_groups", "_providers")

    def __init__(self, config: SidecarConfig) -> None:
        general, litellm = config.general_settings, config.litellm_settings
        fixed: list[Budget] = []
        if general.max_budget is not None:
            fixed.append(_budget("global", SpendCap(general.max_budget, general.budget_duration)))
        if litellm.max_budget is not None:
            cap = SpendCap(litellm.max_budget, litellm.budget_duration)
            fixed.append(_budget("global/litellm", cap))
        self._fixed = tuple(fixed)
        self._groups = _group_budgets(config)
        self._deployments = {
            d.id: _budget(
                f"deployment:{d.id}",
                SpendCap(d.deployment_max_budget, d.deployment_budget_duration),
            )
            for d in config.deployments
            if d.deployment_max_budget is not None
        }
        self._providers = {
            name: _budget(f"provider:{name}", cap)
            for name, cap in config.router_settings.provider_budget_config.items()
        }
        budget = config.budget
        self._callers = {
            caller: _budget(f"caller:{caller}", cap) for caller, cap in budget.callers.items()
        }
        default = budget.default_caller
        if default is None and litellm.max_end_user_budget is not None:
            default = SpendCap(litellm.max_end_user_budget, None)
        self._default_caller = default

    def for_call(self, deployment: Deployment, caller: str) -> tuple[Budget, ...]:
        """The caps a call on `deployment` by `caller` counts toward; none when local."""
        if deployment.locality is Locality.LOCAL:
            return ()
        found = list(self._fixed)
        group = self._groups.get(deployment.model_group)
        if group is not None:
            found.append(group)
        own = self._deployments.get(deployment.id)
        if own is not None:
            found.append(own)
        provider = self._providers.get(deployment.provider.value)
        if provider is not None:
            found.append(provider)
        if caller:
            mine = self._callers.get(caller)
            if mine is None and self._default_caller is not None:
                mine = _budget(f"caller:{caller}", self._default_caller)
            if mine is not None:
                found.append(mine)
        return tuple(found)

    def configured(self) -> tuple[Budget, ...]:
        """Every cap named in the configuration (callers under the default cap are not)."""
        return (
            *self._fixed,
            *self._groups.values(),
            *self._deployments.values(),
            *self._providers.values(),
            *self._callers.values(),
        )


def _group_budgets(config: SidecarConfig) -> dict[str, Budget]:
    budgets: dict[str, Budget] = {}
    problems: list[str] = []
    for group in config.groups.values():
        caps = {
            (d.max_budget, d.budget_duration) for d in group.deployments if d.max_budget is not None
        }
        if len(caps) > 1:
            problems.append(
                f"model_list ({group.name}): its entries give different model_info.max_budget "
                "or budget_duration; a model group has one budget"
            )
            continue
        if caps:
            cap, duration = caps.pop()
            assert cap is not None
            budgets[group.name] = _budget(f"model_group:{group.name}", SpendCap(cap, duration))
    if problems:
        raise ConfigError(problems, config.source)
    return budgets
