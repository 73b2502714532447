"""Built-in simulators that stand in for backends the sidecar cannot reach.

`make run` must give a working endpoint on a machine with no Ollama and no API
keys. With `--simulate auto`, every deployment that has no API key, no built-in
provider, or an address nobody answers on is served by a simulator of the same
locality instead, and the banner and ListModels say so.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import TracebackType
from urllib.parse import urlsplit

from sidecar.config.model import Deployment, ProviderKind, SidecarConfig
from sidecar.providers import ProviderRegistry
from sidecar.simulate import (
    AnthropicSimulator,
    GeminiSimulator,
    OllamaSimulator,
    OpenAISimulator,
    Simulator,
    profile_by_name,
)
from sidecar.types import Locality

_PROBE_TIMEOUT = 0.5
# Local model names that suggest a large model, which the simulator paces like one.
_LARGE_LOCAL = ("70b", "72b", "32b", "34b")
# The simulator profile of Anthropic deployments.
_CLAUDE = "claude-sonnet"
# The simulator profile of Gemini deployments.
_GEMINI = "gemini-flash"
_SPEAKS: dict[type[Simulator], ProviderKind] = {
    OllamaSimulator: ProviderKind.OLLAMA,
    OpenAISimulator: ProviderKind.OPENAI,
    AnthropicSimulator: ProviderKind.ANTHROPIC,
    GeminiSimulator: ProviderKind.GEMINI,
}


class StandIns:
    def __init__(self, config: SidecarConfig, mode: str) -> None:
        if mode not in ("never", "auto", "always"):
            raise ValueError(f"simulate mode must be never, auto or always, not {mode!r}")
        self._original = config
        self._mode = mode
        self.config = config
        self.simulated: list[str] = []
        self.reasons: list[str] = []
        self._simulators: list[Simulator] = []
        # Which simulator stands in for a deployment, by its identity, so that a reload
        # keeps the stand-ins of the deployments it kept.
        self._stood_in: dict[tuple[str, ...], Simulator] = {}

    async def __aenter__(self) -> StandIns:
        try:
            self.config = await self.cover(self._original)
        except BaseException:
            await self._stop()
            raise
        return self

    async def cover(self, config: SidecarConfig) -> SidecarConfig:
        """`config` with every deployment to simulate served by a simulator, started as
        needed (at start, and for a reloaded configuration)."""
        if self._mode == "never":
            return config
        deployments = config.deployments
        why = await asyncio.gather(*(self._why_simulate(d) for d in deployments))
        chosen = [(d, reason) for d, reason in zip(deployments, why, strict=True) if reason]
        # Each simulator knows every model it stands in for before the first request, so
        # that its model listings (and the health probes reading them) are complete.
        models: dict[str, list[str]] = {}
        for deployment, _ in chosen:
            if _identity(deployment) not in self._stood_in:
                models.setdefault(_profile(deployment), []).append(deployment.upstream_model)
        started = {
            profile: await self._simulator(profile, names) for profile, names in models.items()
        }
        replaced: dict[str, Deployment] = {}
        for deployment, _ in chosen:
            key = _identity(deployment)
            simulator = self._stood_in.get(key) or started[_profile(deployment)]
            self._stood_in[key] = simulator
            replaced[deployment.id] = _stand_in(deployment, simulator)
        self.simulated = [deployment.id for deployment, _ in chosen]
        self.reasons = [f"{deployment.id}: {reason}" for deployment, reason in chosen]
        return config.with_deployments(replaced)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _why_simulate(self, deployment: Deployment) -> str | None:
        if self._mode == "always":
            return "simulation forced (--simulate always)"
        if not ProviderRegistry.builtin(deployment.provider):
            return f"provider {deployment.provider.value!r} is not built in yet"
        if deployment.locality is Locality.CLOUD and not deployment.api_key:
            return "no API key configured"
        if not await _answers(deployment.api_base):
            return f"nothing answers at {deployment.api_base}"
        return None

    async def _simulator(self, profile: str, models: list[str]) -> Simulator:
        simulator: Simulator
        if profile.startswith("local"):
            simulator = OllamaSimulator(profile=profile_by_name(profile), models=models)
        elif profile == _CLAUDE:
            simulator = AnthropicSimulator(profile=profile_by_name(profile), models=models)
        elif profile == _GEMINI:
            simulator = GeminiSimulator(profile=profile_by_name(profile), models=models)
        else:
            simulator = OpenAISimulator(profile=profile_by_name(profile), models=models)
        await simulator.start()
        self._simulators.append(simulator)
        return simulator

    async def _stop(self) -> None:
        simulators, self._simulators = self._simulators, []
        self._stood_in.clear()
        for simulator in simulators:
            await simulator.stop()


def _identity(deployment: Deployment) -> tuple[str, ...]:
    return (
        deployment.id,
        deployment.provider.value,
        deployment.api_base,
        deployment.upstream_model,
    )


def _stand_in(deployment: Deployment, simulator: Simulator) -> Deployment:
    provider = _SPEAKS[type(simulator)]
    return dataclasses.replace(
        deployment,
        provider=provider,
        api_base=simulator.base_url,
        api_key=None if provider is ProviderKind.OLLAMA else "simulated",
        simulated=True,
    )


def _profile(deployment: Deployment) -> str:
    """The simulator profile a deployment is stood in by: local sizes, or a cloud model."""
    if deployment.locality is Locality.LOCAL:
        large = any(size in deployment.upstream_model.lower() for size in _LARGE_LOCAL)
        return "local-70b" if large else "local-8b"
    # A Claude or Gemini deployment is stood in by its own protocol, so that what it is
    # sent and answers goes through the provider it will use for real.
    if deployment.provider is ProviderKind.ANTHROPIC:
        return _CLAUDE
    if deployment.provider is ProviderKind.GEMINI:
        return _GEMINI
    return "gpt-4o-mini"


async def _answers(api_base: str) -> bool:
    """True when something accepts a TCP connection at the base URL's address."""
    parts = urlsplit(api_base)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), _PROBE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True
