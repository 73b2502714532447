"""Providers: one wire protocol each, on shared frame readers and one stream loop.

registry   kind -> provider class; the engine's one entry point (ProviderRegistry)
base       the Provider protocol (stream, probe) and ProbeResult
relay      the stream loop every provider shares
sse        server-sent events reader (OpenAI, Anthropic, Gemini)
ndjson     newline-delimited JSON reader (Ollama)
http       pooled connections, limits on what upstreams send, error mapping
ollama     Ollama's native /api/chat
openai     OpenAI-compatible /chat/completions
anthropic  Anthropic Messages /v1/messages
gemini     Google Gemini streamGenerateContent (gemini_schema: JSON Schema as Gemini takes it)
"""

from __future__ import annotations

from sidecar.providers.base import ProbeResult, ProbeStatus, Provider
from sidecar.providers.http import HttpPool
from sidecar.providers.registry import ProviderRegistry

__all__ = ["HttpPool", "ProbeResult", "ProbeStatus", "Provider", "ProviderRegistry"]
