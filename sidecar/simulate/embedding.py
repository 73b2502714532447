"""Deterministic embeddings for the simulators: the same text always gives the same vector.

A vector is drawn from a generator seeded by a hash of the input, then scaled to unit
length, so that similarity between two answers is stable across runs and processes.
"""

from __future__ import annotations

import hashlib
import math
import random


def vector_for(item: str | list[int], dimensions: int) -> list[float]:
    """The unit vector of `dimensions` numbers a simulated model gives `item`."""
    key = item.encode() if isinstance(item, str) else repr(item).encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def input_tokens(item: str | list[int]) -> int:
    """The tokens an input counts for: its length // 4 for text, at least 1."""
    return len(item) if isinstance(item, list) else max(1, len(item) // 4)
