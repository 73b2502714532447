"""How the engine wires its telemetry and its quality shadow: the gauges' sources,
the call log, calls refused before they started, and the shadow sampler."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sidecar.config.model import LoggingConfig
from sidecar.engine.shadow import shadow_runner
from sidecar.errors import BudgetExceeded, PrivacyBlocked, SidecarError
from sidecar.quality import ShadowSampler
from sidecar.quality.store import PairStore
from sidecar.telemetry import CallReport
from sidecar.telemetry.aggregate import Labels
from sidecar.telemetry.logs import CallLog
from sidecar.telemetry.metrics import HEALTH_VALUES
from sidecar.types import ChatRequest

if TYPE_CHECKING:
    from sidecar.engine.engine import Engine


def call_log(config: LoggingConfig) -> CallLog | None:
    """The call log when `logging.call_log` (auto: with JSON logs) says so."""
    wanted = config.call_log == "on" or (config.call_log == "auto" and config.format == "json")
    return CallLog(include_prompts=config.include_prompts) if wanted else None


def observe(engine: Engine) -> None:
    """Let telemetry read the engine's aliases, health and budgets when it collects."""

    def in_flight() -> list[tuple[Labels, float]]:
        health = engine.health
        return [
            ({"deployment": d.id}, float(health.in_flight(d.id))) for d in engine.config.deployments
        ]

    def health_states() -> list[tuple[Labels, float]]:
        return [
            ({"deployment": h.deployment.id}, float(HEALTH_VALUES.get(h.state.value, 0)))
            for h in engine.health.all()
        ]

    def budget_remaining() -> list[tuple[Labels, float]]:
        return [({"budget": s.budget}, s.remaining) for s in engine.budgets.known_status()]

    engine.telemetry.bind(
        lambda model: model in engine.config.groups, in_flight, health_states, budget_remaining
    )


def rejected(request: ChatRequest, error: SidecarError, duration: float) -> CallReport:
    """The report of a call refused while planning (unknown model, invalid, privacy, budget)."""
    return CallReport(
        request_id=request.request_id,
        model=request.model,
        route=None,
        outcome="rejected",
        started=time.time() - duration,
        duration=duration,
        error_type=error.code.name,
        sensitive=isinstance(error, PrivacyBlocked),
        privacy_refused=isinstance(error, PrivacyBlocked),
        budget_refused=isinstance(error, BudgetExceeded),
        task=request.metadata.get("task", ""),
    )


def shadow_sampler(engine: Engine) -> ShadowSampler | None:
    config = engine.config.quality
    if config.compare_with is None or config.sample_rate <= 0:
        return None
    run = shadow_runner(engine.stream, engine.clock.now, config.preview_chars)
    store = PairStore(config.log_path, int(config.max_log_mb * 1024 * 1024))
    return ShadowSampler(config, run, store.append)
