"""Active health probes: cheap periodic requests that never cost tokens.

Ollama is asked for `/api/tags` and `/api/ps`, OpenAI-compatible servers for
`/models`. Probes run in one background task owned by the engine, which
watches every deployment on its own schedule: each `probe_interval`, or
`not_pulled_recheck` while its model is missing. Each probe is bounded by
`probe_timeout`.

A probe reports only what it learned. An endpoint the server does not offer
(404/405/501) is logged once, shown in `status` and not asked again; when
none is left, that deployment is not probed any more. A probe that breaks in
a way nobody foresaw is logged with its traceback and changes nothing: the
watch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sidecar.clock import Clock, MonotonicClock, sleep, timeout_at
from sidecar.config.model import Deployment, HealthConfig
from sidecar.health.tracker import HealthTracker
from sidecar.providers import ProbeResult, ProbeStatus, ProviderRegistry

log = logging.getLogger("sidecar.health.probes")

_FINE = (ProbeStatus.READY, "")
_WORTH_A_WARNING = frozenset({ProbeStatus.NOT_PULLED, ProbeStatus.FAILED, ProbeStatus.UNKNOWN})


class Prober:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        health: HealthTracker,
        providers: ProviderRegistry,
        settings: HealthConfig,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or MonotonicClock()
        self._deployments = tuple(deployments)
        self._health = health
        self._providers = providers
        self._settings = settings
        # Per deployment: probe endpoints the server does not offer, and the last
        # finding (logged when it changes, not every round).
        self._skip: dict[str, frozenset[str]] = {}
        self._last: dict[str, tuple[ProbeStatus, str]] = {}

    async def run(self) -> None:
        """Watch every deployment until cancelled."""
        async with asyncio.TaskGroup() as group:
            for deployment in self._deployments:
                group.create_task(self._watch(deployment), name=f"health probe {deployment.id}")

    async def round(self) -> None:
        """Probe every deployment once."""
        await asyncio.gather(*(self.probe(d) for d in self._deployments))

    async def _watch(self, deployment: Deployment) -> None:
        while True:
            wait = await self.probe(deployment)
            if wait is None:
                return
            await sleep(self._clock, wait)

    async def probe(self, deployment: Deployment) -> float | None:
        """Probe one deployment; the seconds until its next probe, None for never."""
        try:
            return await self._probe(deployment)
        except Exception:
            # Contained: one deployment's surprise must not end the watch over the rest,
            # nor this deployment's next probe.
            log.exception("%s: health probe failed unexpectedly; probing goes on", deployment.id)
            return self._settings.probe_interval

    async def _probe(self, deployment: Deployment) -> float | None:
        settings = self._settings
        skip = self._skip.get(deployment.id, frozenset())
        try:
            async with timeout_at(self._clock, self._clock.now() + settings.probe_timeout):
                result = await self._providers.probe(deployment, skip)
        except TimeoutError:
            result = ProbeResult(
                ProbeStatus.FAILED, f"probe timed out after {settings.probe_timeout:g}s"
            )
        if result is None:
            return None  # the provider has no probe
        self._note_not_offered(deployment, skip, result.not_offered)
        self._apply(deployment, result)
        if result.exhausted:
            log.info("%s: its server offers none of the health probes: not probed", deployment.id)
            return None
        if result.status is ProbeStatus.NOT_PULLED:
            return min(settings.probe_interval, settings.not_pulled_recheck)
        return settings.probe_interval

    def _note_not_offered(
        self, deployment: Deployment, skip: frozenset[str], found: tuple[str, ...]
    ) -> None:
        new = [path for path in found if path not in skip]
        if not new:
            return
        self._skip[deployment.id] = skip.union(new)
        for path in new:
            log.warning(
                "%s: its server does not offer %s; that probe is no longer used",
                deployment.id,
                path,
            )
            self._health.probe_not_offered(deployment.id, path)

    def _apply(self, deployment: Deployment, result: ProbeResult) -> None:
        health, status, detail = self._health, result.status, result.detail
        if status is ProbeStatus.READY:
            health.probe_ready(deployment.id)
        elif status is ProbeStatus.COLD:
            health.probe_cold(deployment.id, detail)
        elif status is ProbeStatus.NOT_PULLED:
            health.probe_not_pulled(deployment.id, detail)
        elif status is ProbeStatus.FAILED:
            health.probe_failed(deployment.id, detail)
        # Logged when the finding changes, not on every round.
        finding = (status, detail)
        if self._last.get(deployment.id, _FINE) == finding:
            return
        self._last[deployment.id] = finding
        if status in _WORTH_A_WARNING:
            log.warning("%s: probe %s: %s", deployment.id, status.value, detail or "no detail")
        else:
            log.info("%s: probe %s%s", deployment.id, status.value, f": {detail}" if detail else "")
