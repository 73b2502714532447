"""The resolved model table that `llm-sidecar check-config` prints.

It shows what the loader made of the file (provider, locality, context window, where
each came from being the usual question), never a secret: keys are shown as set/unset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.config.model import Deployment, SidecarConfig

_COLUMNS = (
    "alias",
    "deployment",
    "provider",
    "upstream model",
    "locality",
    "api_base",
    "context",
    "api_key",
    "notes",
)
_RIGHT_ALIGNED = frozenset({"context"})


def render_model_table(config: SidecarConfig) -> str:
    """A plain-text report: one row per deployment, then fallbacks, settings and warnings."""
    deployments = config.deployments
    source = f" {config.source}" if config.source else ""
    lines = [
        f"config{source}: {len(config.groups)} model groups, {len(deployments)} deployments",
        "",
        *_table(_COLUMNS, [_row(d) for d in deployments]),
        "",
        "fallbacks",
        *_fallbacks(config),
        "",
        "settings",
        *_settings(config),
    ]
    if config.warnings:
        lines += ["", "warnings", *(f"  {warning}" for warning in config.warnings)]
    return "\n".join(lines)


def _row(deployment: Deployment) -> list[str]:
    notes = []
    if deployment.simulated:
        notes.append("simulated")
    if deployment.max_budget is not None:
        notes.append(f"budget {_money(deployment.max_budget, deployment.budget_duration)}")
    window = deployment.context_window
    return [
        deployment.model_group,
        deployment.id,
        deployment.provider.value,
        deployment.upstream_model,
        deployment.locality.value,
        deployment.api_base,
        "unknown" if window is None else f"{window:,}",
        _set(deployment.api_key),
        ", ".join(notes),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in (header, *rows):
        padded = (
            cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
            for name, cell, width in zip(header, cells, widths, strict=True)
        )
        lines.append("  ".join(padded).rstrip())
    return lines


def _fallbacks(config: SidecarConfig) -> list[str]:
    litellm = config.litellm_settings
    policies = config.router_settings.model_group_retry_policy
    lines = [f"  default: {', '.join(litellm.default_fallbacks) or 'none'}"]
    lines += _fallback_map("per group", litellm.fallbacks)
    lines += _fallback_map("context window", litellm.context_window_fallbacks)
    lines += _fallback_map(
        "retry policy", {alias: policy.fallbacks for alias, policy in policies.items()}
    )
    return lines


def _fallback_map(title: str, mapping: Mapping[str, Sequence[str]]) -> list[str]:
    if not mapping:
        return [f"  {title}: none"]
    return [f"  {title}:"] + [
        f"    {alias} -> {', '.join(targets) or 'none'}" for alias, targets in mapping.items()
    ]


def _settings(config: SidecarConfig) -> list[str]:
    router = config.router_settings
    general = config.general_settings
    timeouts = config.timeouts
    lines = [
        f"  routing strategy: {router.routing_strategy}"
        f" (pre-call checks {'on' if router.enable_pre_call_checks else 'off'})",
        f"  retries: {config.litellm_settings.num_retries}",
        f"  timeouts: connect {timeouts.connect:g}s, first token {timeouts.first_token:g}s,"
        f" idle {timeouts.idle:g}s, total {timeouts.total:g}s",
    ]
    for alias, policy in router.model_group_retry_policy.items():
        timeout = "" if policy.timeout_seconds is None else f"timeout {policy.timeout_seconds:g}s, "
        lines.append(f"  retry policy {alias}: {timeout}retries {policy.num_retries}")
    budget = (
        "none"
        if general.max_budget is None
        else _money(general.max_budget, general.budget_duration)
    )
    lines += [
        f"  budget: {budget}",
        f"  master_key: {_set(general.master_key)}",
        f"  database_url: {_set(general.database_url)}",
    ]
    return lines


def _money(amount: float, duration: str | None) -> str:
    return f"${amount:,.2f}" + (f" per {duration}" if duration else "")


def _set(secret: str | None) -> str:
    return "unset" if secret is None else "set"
