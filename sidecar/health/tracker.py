"""What the sidecar knows about each deployment: up or cooling down, how busy, how fast.

Passive tracking: every attempt reports its outcome. After `failure_threshold`
consecutive failures, or an error rate above `error_rate` over the last
`window` attempts, the deployment cools down for `cooldown` seconds, doubling
on each relapse up to `max_cooldown`. When a cooldown ends the deployment is
half-open: exactly one request goes through as a probe, and its outcome closes
or reopens the circuit. An upstream's Retry-After sets the cooldown directly.

Active tracking (`Prober`, in probes.py) feeds the same tracker from cheap
periodic requests that never cost tokens, and is trusted less than real calls:

- a probe that fails (refused, timed out, 5xx) may cool the deployment down,
  but not when a real call succeeded within the last `probe_interval`, and any
  real call that succeeds ends the cooldown at once;
- a model the server says it has not pulled is NOT_PULLED, a state of its own
  that lasts `not_pulled_recheck` seconds (the prober looks again by then)
  instead of a doubling cooldown;
- a pulled model that is not loaded is COLD: it takes calls, the first one is
  slower;
- a probe endpoint the server does not offer (404/405/501) is recorded in
  `probes_not_offered` and never counts as a failure.

Every method but `wait_for_slot` is synchronous and O(1): the engine calls
them on the request path, and the planner reads them through `is_available`.
`wait_for_slot` queues a request briefly for a deployment that is at its
`max_parallel_requests`, and `end` hands the freed slot to the first in line.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sidecar.clock import Clock, MonotonicClock, timeout_at
from sidecar.config.model import Deployment, HealthConfig
from sidecar.errors import UpstreamError

# Weight of the newest sample in the moving average of time to first token.
_TTFT_ALPHA = 0.2


class State(enum.Enum):
    UP = "up"
    COLD = "cold"  # takes calls, but the model is not loaded: the first answer is slower
    COOLING = "cooling"  # refusing traffic until `until`
    HALF_OPEN = "half_open"  # one probe request in flight
    NOT_PULLED = "not_pulled"  # the server lacks the model; looked at again at `until`


# States that end by the clock at `until`.
_TIMED = frozenset({State.COOLING, State.NOT_PULLED})


@dataclass(slots=True)
class DeploymentHealth:
    deployment: Deployment
    state: State = State.UP
    until: float = 0.0  # end of the cooldown (or of NOT_PULLED), clock time
    relapses: int = 0  # cooldowns in a row, for the backoff
    consecutive_failures: int = 0
    outcomes: deque[bool] = field(default_factory=deque)
    in_flight: int = 0
    ttft: float | None = None  # moving average, seconds
    last_error: str = ""
    reason: str = ""  # why the current state was entered
    # The active probe started the current cooldown (a probe's success may end it).
    probe_cooled: bool = False
    last_success: float | None = None  # clock time of the last real call that answered
    # Probe endpoints this server does not offer, e.g. "/api/ps".
    probes_not_offered: tuple[str, ...] = ()


class HealthTracker:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        settings: HealthConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or HealthConfig()
        self._clock = clock or MonotonicClock()
        self._now = self._clock.now
        self._health = {d.id: DeploymentHealth(d) for d in deployments}
        self._listeners: list[Callable[[], None]] = []
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    # -- reading ----------------------------------------------------------------

    def __getitem__(self, deployment_id: str) -> DeploymentHealth:
        return self._health[deployment_id]

    def all(self) -> list[DeploymentHealth]:
        return list(self._health.values())

    def is_available(self, deployment_id: str) -> bool:
        """Whether a new request may be sent now (a half-open slot counts)."""
        h = self._health.get(deployment_id)
        if h is None:
            return True
        if h.state in _TIMED:
            return self._now() >= h.until
        return h.state is not State.HALF_OPEN

    def in_flight(self, deployment_id: str) -> int:
        h = self._health.get(deployment_id)
        return h.in_flight if h else 0

    def ttft(self, deployment_id: str) -> float | None:
        h = self._health.get(deployment_id)
        return h.ttft if h else None

    def cooldown_left(self, deployment_id: str) -> float:
        """Seconds until the deployment takes calls again: what is left of its cooldown
        (or of NOT_PULLED); 0 when it is not waiting for either."""
        h = self._health.get(deployment_id)
        if h is None or h.state not in _TIMED:
            return 0.0
        return max(0.0, h.until - self._now())

    def next_recovery(self) -> float | None:
        """Seconds until the next cooldown (or NOT_PULLED) that is still running ends, if any."""
        now = self._now()
        ends = [h.until - now for h in self._health.values() if h.state in _TIMED]
        pending = [end for end in ends if end > 0]
        return min(pending) if pending else None

    def has_slot(self, deployment: Deployment) -> bool:
        cap = deployment.max_parallel_requests
        return cap is None or self.in_flight(deployment.id) < cap

    async def wait_for_slot(self, deployment: Deployment, within: float) -> bool:
        """Wait up to `within` seconds for the deployment to drop below its cap."""
        loop = asyncio.get_running_loop()
        try:
            async with timeout_at(self._clock, self._now() + within):
                while not self.has_slot(deployment):
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.setdefault(deployment.id, deque()).append(waiter)
                    await waiter
        except TimeoutError:
            return False
        return True

    def group_serving(self, deployments: Iterable[Deployment]) -> bool:
        return any(self.is_available(d.id) for d in deployments)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a deployment changes state (health service updates)."""
        self._listeners.append(listener)

    def retarget(self, deployments: Iterable[Deployment], settings: HealthConfig) -> None:
        """After a reload: what is known of each deployment that kept its identity (id,
        provider, address and upstream model) carries over; the others start afresh, and
        the removed ones are forgotten (their calls in flight end here as no-ops)."""
        kept: dict[str, DeploymentHealth] = {}
        for deployment in deployments:
            h = self._health.get(deployment.id)
            if h is not None and _same_upstream(h.deployment, deployment):
                h.deployment = deployment
                kept[deployment.id] = h
            else:
                kept[deployment.id] = DeploymentHealth(deployment)
        self._health = kept
        self.settings = settings
        for listener in self._listeners:
            listener()

    # -- the request path -------------------------------------------------------

    def begin(self, deployment_id: str) -> None:
        """An attempt starts; a cooled-down deployment becomes half-open for it."""
        h = self._health.get(deployment_id)
        if h is None:
            return
        h.in_flight += 1
        if h.state is State.COOLING and self._now() >= h.until:
            self._set(h, State.HALF_OPEN, "probing after cooldown")

    def end(self, deployment_id: str) -> None:
        h = self._health.get(deployment_id)
        if h is None:
            return
        if h.in_flight > 0:
            h.in_flight -= 1
        waiters = self._waiters.get(deployment_id)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if h.state is State.HALF_OPEN:
            # The probe request ended with no verdict (the caller went away): let the
            # next request probe instead of leaving the deployment shut for good.
            h.until = self._now()
            self._set(h, State.COOLING, "probe request abandoned")

    def succeeded(self, deployment_id: str, ttft: float | None = None) -> None:
        h = self._health.get(deployment_id)
        if h is None:
            return
        h.consecutive_failures = 0
        h.last_success = self._now()
        self._remember(h, True)
        if ttft is not None:
            alpha = _TTFT_ALPHA
            h.ttft = ttft if h.ttft is None else h.ttft + alpha * (ttft - h.ttft)
        if h.state is not State.UP:
            h.relapses = 0
            self._set(h, State.UP, "request succeeded")

    def failed(self, deployment_id: str, error: str, retry_after: float | None = None) -> None:
        h = self._health.get(deployment_id)
        if h is None:
            return
        h.consecutive_failures += 1
        h.last_error = error
        self._remember(h, False)
        s = self.settings
        if h.state is State.NOT_PULLED:
            return  # already explained; the prober's recheck decides when it ends
        if retry_after is not None:
            self._cool(
                h,
                min(retry_after, s.max_cooldown),
                f"upstream asked to retry after {retry_after:g}s",
            )
        elif h.state is State.HALF_OPEN:
            self._cool(h, self._backoff(h), "probe request failed")
        elif h.consecutive_failures >= s.failure_threshold:
            self._cool(h, self._backoff(h), f"{h.consecutive_failures} failures in a row")
        elif len(h.outcomes) >= s.min_requests:
            rate = h.outcomes.count(False) / len(h.outcomes)
            if rate > s.error_rate:
                self._cool(h, self._backoff(h), f"error rate {rate:.0%} over the last attempts")

    def failed_with(self, error: UpstreamError) -> None:
        """An attempt failed with `error`: it counts only when it was the deployment's fault.

        A request the upstream rejects, or a caller's deadline too short to answer in,
        says nothing about the deployment; counting it would let one caller put it into
        cooldown for every other.
        """
        if error.deployment_fault:
            self.failed(error.deployment, error.message, error.retry_after)

    # -- active probes ----------------------------------------------------------

    def probe_ready(self, deployment_id: str) -> None:
        """A probe found the server up with the model ready."""
        h = self._health.get(deployment_id)
        if h is None or h.state is State.UP or not self._probe_may_lift(h):
            return
        h.relapses = 0
        h.consecutive_failures = 0
        self._set(h, State.UP, "probe succeeded")

    def probe_cold(self, deployment_id: str, detail: str) -> None:
        """A probe found the model pulled but not loaded: the first call will be slower."""
        h = self._health.get(deployment_id)
        if h is None or h.state is State.COLD or not self._probe_may_lift(h):
            return
        h.relapses = 0
        h.consecutive_failures = 0
        self._set(h, State.COLD, detail)

    def probe_not_pulled(self, deployment_id: str, detail: str) -> None:
        """A probe found the model missing on its server; look again soon, no backoff."""
        h = self._health.get(deployment_id)
        if h is None or h.state is State.HALF_OPEN or self._recently_answered(h):
            return
        h.last_error = detail
        h.until = self._now() + self.settings.not_pulled_recheck
        self._set(h, State.NOT_PULLED, detail)

    def probe_failed(self, deployment_id: str, detail: str) -> None:
        """A probe could not reach the server, timed out, or got a 5xx."""
        h = self._health.get(deployment_id)
        if h is None:
            return
        h.last_error = detail
        if h.state is State.HALF_OPEN or self._recently_answered(h):
            return
        if h.state is State.COOLING and self._now() < h.until:
            return
        self._cool(h, self._backoff(h), f"probe failed: {detail}")
        h.probe_cooled = True

    def probe_not_offered(self, deployment_id: str, endpoint: str) -> None:
        """The server does not offer this probe endpoint (404/405/501): never a failure."""
        h = self._health.get(deployment_id)
        if h is not None and endpoint not in h.probes_not_offered:
            h.probes_not_offered = (*h.probes_not_offered, endpoint)

    def _probe_may_lift(self, h: DeploymentHealth) -> bool:
        """A probe's good news ends its own verdicts, never one that real calls earned."""
        if h.state is State.HALF_OPEN:
            return False
        return h.state is not State.COOLING or h.probe_cooled

    def _recently_answered(self, h: DeploymentHealth) -> bool:
        """A real call answered since the last probe round: it outweighs any probe."""
        return (
            h.last_success is not None
            and self._now() - h.last_success < self.settings.probe_interval
        )

    # -- internals ----------------------------------------------------------------

    def _remember(self, h: DeploymentHealth, ok: bool) -> None:
        h.outcomes.append(ok)
        if len(h.outcomes) > self.settings.window:
            h.outcomes.popleft()

    def _backoff(self, h: DeploymentHealth) -> float:
        s = self.settings
        return min(s.max_cooldown, s.cooldown * 2.0 ** min(h.relapses, 16))

    def _cool(self, h: DeploymentHealth, seconds: float, reason: str) -> None:
        h.relapses += 1
        h.until = self._now() + seconds
        h.outcomes.clear()
        h.probe_cooled = False
        self._set(h, State.COOLING, reason)

    def _set(self, h: DeploymentHealth, state: State, reason: str) -> None:
        h.state = state
        h.reason = reason
        for listener in self._listeners:
            listener()


def _same_upstream(old: Deployment, new: Deployment) -> bool:
    return (old.provider, old.api_base, old.upstream_model) == (
        new.provider,
        new.api_base,
        new.upstream_model,
    )
