"""Fixtures shared by the end-to-end tests: simulated upstreams on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.simulate import OllamaSimulator, OpenAISimulator, profile_by_name
from tests.harness import UPSTREAM_KEY


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaSimulator]:
    """A simulated Ollama that answers 20 tokens at once."""
    async with OllamaSimulator(profile=profile_by_name("instant")) as sim:
        yield sim


@pytest.fixture
async def openai_sim() -> AsyncIterator[OpenAISimulator]:
    """A simulated OpenAI-compatible server that wants UPSTREAM_KEY."""
    async with OpenAISimulator(profile=profile_by_name("instant"), api_key=UPSTREAM_KEY) as sim:
        yield sim
