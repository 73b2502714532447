"""The providers built into the sidecar: one line per wire protocol.

A new provider is one new module (a class built with the shared `HttpPool` that
implements `Provider`) and one line in `_PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping

from sidecar.config.model import Deployment, ProviderKind
from sidecar.errors import ProviderUnsupported, UpstreamError
from sidecar.providers.anthropic import AnthropicProvider
from sidecar.providers.base import ProbeResult, ProbeStatus, Provider
from sidecar.providers.gemini import GeminiProvider
from sidecar.providers.http import HttpPool
from sidecar.providers.ollama import OllamaProvider
from sidecar.providers.openai import OpenAIProvider
from sidecar.types import ChatRequest, Chunk, EmbeddingRequest, Embeddings

_PROVIDERS: Mapping[ProviderKind, Callable[[HttpPool], Provider]] = {
    ProviderKind.ANTHROPIC: AnthropicProvider,
    ProviderKind.GEMINI: GeminiProvider,
    ProviderKind.OLLAMA: OllamaProvider,
    ProviderKind.OPENAI: OpenAIProvider,
}


class ProviderRegistry:
    """Maps each provider kind to its implementation, sharing one connection pool."""

    def __init__(self, pool: HttpPool | None = None) -> None:
        self.pool = pool or HttpPool()
        self._providers = {kind: build(self.pool) for kind, build in _PROVIDERS.items()}

    @staticmethod
    def builtin(kind: ProviderKind) -> bool:
        return kind in _PROVIDERS

    def stream(self, deployment: Deployment, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        return self._provider(deployment).stream(deployment, request)

    def completes_text(self, deployment: Deployment) -> bool:
        """Whether the deployment's upstream has a text-completion endpoint of its own."""
        provider = self._providers.get(deployment.provider)
        return provider is not None and provider.completes_text

    async def embed(self, deployment: Deployment, request: EmbeddingRequest) -> Embeddings:
        return await self._provider(deployment).embed(deployment, request)

    async def probe(
        self, deployment: Deployment, skip: frozenset[str] = frozenset()
    ) -> ProbeResult | None:
        """A health probe that costs no tokens, leaving out the endpoints in `skip`
        (those found not offered); None when no provider is built for it."""
        provider = self._providers.get(deployment.provider)
        if provider is None:
            return None
        try:
            return await provider.probe(deployment, skip)
        except UpstreamError as exc:
            return ProbeResult(ProbeStatus.FAILED, exc.message)

    def _provider(self, deployment: Deployment) -> Provider:
        provider = self._providers.get(deployment.provider)
        if provider is None:
            raise ProviderUnsupported(
                deployment.id,
                f"provider {deployment.provider.value!r} is not built into this sidecar yet "
                f"(supported: {', '.join(k.value for k in self._providers)})",
            )
        return provider

    async def aclose(self) -> None:
        await self.pool.aclose()
