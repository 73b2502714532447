"""Providers: one wire protocol each, chosen by a typed registry."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from sidecar.config.model import Deployment, ProviderKind
from sidecar.errors import ProviderUnsupported, UpstreamError
from sidecar.providers import ollama, openai
from sidecar.providers.base import ProbeResult, ProbeStatus, Provider
from sidecar.providers.http import HttpPool
from sidecar.providers.ollama import OllamaProvider
from sidecar.providers.openai import OpenAIProvider
from sidecar.types import ChatRequest, Chunk

__all__ = ["HttpPool", "ProbeResult", "ProbeStatus", "Provider", "ProviderRegistry"]


_BUILTIN: dict[ProviderKind, type[OllamaProvider | OpenAIProvider]] = {
    ProviderKind.OLLAMA: OllamaProvider,
    ProviderKind.OPENAI: OpenAIProvider,
}
_Probe = Callable[[HttpPool, Deployment, frozenset[str]], Awaitable[ProbeResult]]
_PROBES: dict[ProviderKind, _Probe] = {
    ProviderKind.OLLAMA: ollama.probe,
    ProviderKind.OPENAI: openai.probe,
}


class ProviderRegistry:
    """Maps each provider kind to its implementation, sharing one connection pool."""

    def __init__(self, pool: HttpPool | None = None) -> None:
        self.pool = pool or HttpPool()
        self._providers: dict[ProviderKind, Provider] = {
            kind: cls(self.pool) for kind, cls in _BUILTIN.items()
        }

    @staticmethod
    def builtin(kind: ProviderKind) -> bool:
        return kind in _BUILTIN

    def stream(self, deployment: Deployment, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        provider = self._providers.get(deployment.provider)
        if provider is None:
            raise ProviderUnsupported(
                deployment.id,
                f"provider {deployment.provider.value!r} is not built into this sidecar yet "
                f"(supported: {', '.join(k.value for k in self._providers)})",
            )
        return provider.stream(deployment, request)

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult | None:
        """A health probe that costs no tokens, leaving out the endpoints in `skip`
        (those found not offered); None when the provider has none."""
        probe = _PROBES.get(deployment.provider)
        if probe is None:
            return None
        try:
            return await probe(self.pool, deployment, skip)
        except UpstreamError as exc:
            return ProbeResult(ProbeStatus.FAILED, exc.message)

    async def aclose(self) -> None:
        await self.pool.aclose()
