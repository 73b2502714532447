"""Simulated LLM upstreams that speak the real wire protocols, for tests, benchmarks and
`make run`: `OllamaSimulator` (native NDJSON API), `OpenAISimulator` (Chat Completions SSE),
`AnthropicSimulator` (Messages SSE) and `GeminiSimulator` (generateContent SSE), with
configurable latency, token rate (`SimProfile`) and injected faults (`Fault`). What a
simulated model answers (text, tool calls from the tool's schema, JSON valid against the
requested schema) is in `reply` and `schema`.
"""

from sidecar.simulate.anthropic import AnthropicSimulator
from sidecar.simulate.faults import FAULT_KINDS, Fault, FaultKind
from sidecar.simulate.gemini import GeminiSimulator
from sidecar.simulate.ollama import OllamaSimulator
from sidecar.simulate.openai import OpenAISimulator
from sidecar.simulate.profile import SimProfile, answer_text, presets, profile_by_name
from sidecar.simulate.server import SimStats, Simulator

__all__ = [
    "FAULT_KINDS",
    "AnthropicSimulator",
    "Fault",
    "FaultKind",
    "GeminiSimulator",
    "OllamaSimulator",
    "OpenAISimulator",
    "SimProfile",
    "SimStats",
    "Simulator",
    "answer_text",
    "presets",
    "profile_by_name",
]
