"""What the embedding providers share: reading an upstream's vectors, checked once."""

from __future__ import annotations

from typing import Any

from sidecar.config.model import Deployment
from sidecar.errors import UpstreamMalformed


def vectors_from(
    deployment: Deployment, raw: Any, count: int, what: str
) -> tuple[tuple[float, ...], ...]:
    """The `count` vectors of an upstream answer, or UpstreamMalformed naming `what`.

    Each vector is checked for being a non-empty list of numbers and all of equal
    length, once, where the answer enters.
    """
    if not isinstance(raw, list) or len(raw) != count:
        got = len(raw) if isinstance(raw, list) else "no list"
        raise UpstreamMalformed(deployment.id, f"{what}: expected {count} vectors, got {got}")
    vectors = []
    size = None
    for i, vector in enumerate(raw):
        if not isinstance(vector, list) or not vector:
            raise UpstreamMalformed(deployment.id, f"{what}: vector {i} is not a list of numbers")
        try:
            floats = tuple(map(float, vector))
        except (TypeError, ValueError):
            raise UpstreamMalformed(
                deployment.id, f"{what}: vector {i} holds something other than numbers"
            ) from None
        if size is None:
            size = len(floats)
        elif len(floats) != size:
            raise UpstreamMalformed(
                deployment.id, f"{what}: vector {i} has {len(floats)} numbers, not {size}"
            )
        vectors.append(floats)
    return tuple(vectors)


def count(value: Any) -> int | None:
    """A token count an upstream reported, None when it reported none that is sane."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
