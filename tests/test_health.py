"""The health tracker's state machine, on an injected clock (no sleeping)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sidecar.config.model import Deployment, HealthConfig, ProviderKind
from sidecar.health import HealthTracker, State
from tests.fake_clock import FakeClock as Clock

DEPLOYMENT = Deployment("m/0", "m", ProviderKind.OLLAMA, "x", "http://127.0.0.1:9")


def tracker(clock: Clock, **settings: Any) -> HealthTracker:
    base = HealthConfig(failure_threshold=2, cooldown=1.0, max_cooldown=3.0)
    return HealthTracker([DEPLOYMENT], dataclasses.replace(base, **settings), clock=clock)


def state(health: HealthTracker) -> State:
    # A call, not an attribute read, so that mypy does not narrow it across changes.
    return health["m/0"].state


def fail(health: HealthTracker) -> None:
    health.begin("m/0")
    health.failed("m/0", "boom")
    health.end("m/0")


def test_cooldown_doubles_on_relapse_up_to_the_cap() -> None:
    clock = Clock()
    health = tracker(clock)
    fail(health)
    assert health.is_available("m/0")  # one failure is under the threshold
    fail(health)
    assert state(health) is State.COOLING
    assert health.cooldown_left("m/0") == 1.0
    assert not health.is_available("m/0")
    for expected in (2.0, 3.0, 3.0):  # each failed half-open probe doubles, capped at 3
        clock.advance(health.cooldown_left("m/0"))
        assert health.is_available("m/0")
        health.begin("m/0")
        assert state(health) is State.HALF_OPEN
        assert not health.is_available("m/0")  # one probe at a time
        health.failed("m/0", "still down")
        health.end("m/0")
        assert health.cooldown_left("m/0") == expected


def test_a_successful_probe_closes_the_circuit() -> None:
    clock = Clock()
    health = tracker(clock)
    fail(health)
    fail(health)
    clock.advance(1.0)
    health.begin("m/0")
    health.succeeded("m/0", ttft=0.05)
    health.end("m/0")
    assert state(health) is State.UP
    assert health.cooldown_left("m/0") == 0.0
    assert health.ttft("m/0") == 0.05


def test_an_abandoned_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    health = tracker(clock)
    fail(health)
    fail(health)
    clock.advance(1.0)
    health.begin("m/0")
    health.end("m/0")  # the caller went away: no verdict
    assert health.is_available("m/0")


def test_retry_after_sets_the_cooldown_exactly() -> None:
    clock = Clock()
    health = tracker(clock)
    health.failed("m/0", "429", retry_after=7.5)
    assert health.cooldown_left("m/0") == 7.5
    assert "retry after 7.5s" in health["m/0"].reason
    assert health.next_recovery() == 7.5


def test_error_rate_over_the_window_starts_a_cooldown() -> None:
    clock = Clock()
    health = tracker(clock, failure_threshold=100, window=10, min_requests=10, error_rate=0.5)
    for i in range(10):
        health.begin("m/0")
        if i % 3 == 2:
            health.succeeded("m/0")
        else:
            health.failed("m/0", "flaky")
        health.end("m/0")
    assert state(health) is State.COOLING
    assert "error rate" in health["m/0"].reason


def test_probes_mark_down_busy_and_up() -> None:
    clock = Clock()
    health = tracker(clock)
    health.probed("m/0", ok=False, detail="connection refused")
    assert state(health) is State.COOLING
    health.probed("m/0", ok=True, detail="model not loaded yet", busy=True)
    assert state(health) is State.BUSY
    assert health.is_available("m/0")  # busy is slower, not down
    health.probed("m/0", ok=True)
    assert state(health) is State.UP
