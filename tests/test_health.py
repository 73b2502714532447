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
    health = tracker(clock, max_cooldown=10.0)
    health.failed("m/0", "429", retry_after=7.5)
    assert health.cooldown_left("m/0") == 7.5
    assert "retry after 7.5s" in health["m/0"].reason
    assert health.next_recovery() == 7.5


def test_retry_after_is_capped_by_max_cooldown() -> None:
    clock = Clock()
    health = tracker(clock, max_cooldown=10.0)
    health.failed("m/0", "429", retry_after=999_999_999.0)
    assert health.cooldown_left("m/0") == 10.0


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


def test_probes_mark_down_cold_and_up() -> None:
    clock = Clock()
    health = tracker(clock)
    health.probe_failed("m/0", "connection refused")
    assert state(health) is State.COOLING
    health.probe_cold("m/0", "model not loaded yet")
    assert state(health) is State.COLD  # a probe's own cooldown ends with its good news
    assert health.is_available("m/0")  # cold is slower, not down
    health.probe_ready("m/0")
    assert state(health) is State.UP


def test_a_probe_never_lifts_a_cooldown_that_calls_earned() -> None:
    clock = Clock()
    health = tracker(clock)
    fail(health)
    fail(health)
    assert state(health) is State.COOLING
    health.probe_ready("m/0")
    health.probe_cold("m/0", "not loaded")
    assert state(health) is State.COOLING
    assert not health.is_available("m/0")


def test_a_successful_call_ends_a_probe_cooldown_at_once() -> None:
    clock = Clock()
    health = tracker(clock, probe_interval=10.0)
    health.probe_failed("m/0", "HTTP 500 from /api/ps")
    assert state(health) is State.COOLING
    health.begin("m/0")  # tried anyway, e.g. under the panic threshold
    health.succeeded("m/0", ttft=0.1)
    health.end("m/0")
    assert state(health) is State.UP
    assert health.cooldown_left("m/0") == 0.0
    # For one probe interval, that answer outweighs any failing probe.
    clock.advance(9.0)
    health.probe_failed("m/0", "HTTP 500 from /api/ps")
    assert state(health) is State.UP
    assert health["m/0"].last_error == "HTTP 500 from /api/ps"
    clock.advance(2.0)
    health.probe_failed("m/0", "HTTP 500 from /api/ps")
    assert state(health) is State.COOLING


def test_not_pulled_is_its_own_state_with_a_fixed_recheck() -> None:
    clock = Clock()
    health = tracker(clock, not_pulled_recheck=5.0, cooldown=1.0, max_cooldown=60.0)
    for _ in range(4):  # however often it is seen, the wait never doubles
        health.probe_not_pulled("m/0", "model 'x' is not pulled")
        assert state(health) is State.NOT_PULLED
        assert health.cooldown_left("m/0") == 5.0
        assert not health.is_available("m/0")
        assert health.next_recovery() == 5.0
        clock.advance(5.0)
        assert health.is_available("m/0")
    # Calls that fail meanwhile are explained by it and do not turn it into a cooldown.
    health.probe_not_pulled("m/0", "model 'x' is not pulled")
    fail(health)
    fail(health)
    assert state(health) is State.NOT_PULLED
    health.probe_cold("m/0", "pulled now, not loaded yet")
    assert state(health) is State.COLD


def test_a_call_that_answers_ends_not_pulled_and_cold() -> None:
    clock = Clock()
    health = tracker(clock)
    health.probe_not_pulled("m/0", "model 'x' is not pulled")
    health.begin("m/0")
    health.succeeded("m/0")
    health.end("m/0")
    assert state(health) is State.UP
    health.probe_cold("m/0", "not loaded")
    health.begin("m/0")
    health.succeeded("m/0")
    health.end("m/0")
    assert state(health) is State.UP


def test_probes_not_offered_are_recorded_once_and_change_nothing() -> None:
    clock = Clock()
    health = tracker(clock)
    health.probe_not_offered("m/0", "/api/ps")
    health.probe_not_offered("m/0", "/api/ps")
    health.probe_not_offered("m/0", "/api/tags")
    assert health["m/0"].probes_not_offered == ("/api/ps", "/api/tags")
    assert state(health) is State.UP
    assert health.is_available("m/0")


def test_probes_that_change_nothing_notify_nobody() -> None:
    clock = Clock()
    health = tracker(clock)
    changes: list[State] = []
    health.on_change(lambda: changes.append(state(health)))
    for _ in range(3):
        health.probe_ready("m/0")
    health.probe_cold("m/0", "not loaded")
    health.probe_cold("m/0", "not loaded")
    assert changes == [State.COLD]
