"""How deep the JSON a caller sends may nest, checked where it enters.

orjson refuses to serialise data nested past 254 levels, and the sidecar
serialises what callers send (metadata values, passthrough fields such as tool
schemas) on its way upstream. Checked only where it enters, well below that
limit and at a depth no real request reaches, a too-deep value is the caller's
400 / INVALID_ARGUMENT instead of a TypeError deep inside a provider.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

MAX_DEPTH: Final = 64


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` (parsed JSON) nests objects and arrays more than `limit` deep."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
