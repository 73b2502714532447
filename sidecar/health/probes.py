"""Active health probes: cheap periodic requests that never cost tokens.

Ollama is asked for `/api/tags` and `/api/ps`, OpenAI-compatible servers for
`/models`. Probes run in one background task owned by the engine; each round
probes every deployment concurrently, each bounded by `probe_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sidecar.config.model import Deployment, HealthConfig
from sidecar.health import HealthTracker
from sidecar.providers import ProviderRegistry

log = logging.getLogger("sidecar.health.probes")


class Prober:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        health: HealthTracker,
        providers: ProviderRegistry,
        settings: HealthConfig,
    ) -> None:
        self._deployments = tuple(deployments)
        self._health = health
        self._providers = providers
        self._settings = settings

    async def run(self) -> None:
        """Probe every deployment each `probe_interval` seconds, until cancelled."""
        while True:
            await self.round()
            await asyncio.sleep(self._settings.probe_interval)

    async def round(self) -> None:
        await asyncio.gather(*(self._probe(d) for d in self._deployments))

    async def _probe(self, deployment: Deployment) -> None:
        try:
            async with asyncio.timeout(self._settings.probe_timeout):
                result = await self._providers.probe(deployment)
        except TimeoutError:
            self._health.probed(
                deployment.id, False, f"probe timed out after {self._settings.probe_timeout:g}s"
            )
            return
        if result is not None:
            if not result.ok:
                log.warning("%s: %s", deployment.id, result.detail)
            self._health.probed(deployment.id, result.ok, result.detail, busy=result.busy)
