"""Where shadow pairs are kept: one JSON object a line, appended off the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from typing import Any

import orjson


class PairStore:
    def __init__(self, path: str) -> None:
        self.path = path

    async def append(self, pair: Mapping[str, Any]) -> None:
        line = orjson.dumps(pair) + b"\n"
        await asyncio.to_thread(self._write, line)

    def _write(self, line: bytes) -> None:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(self.path, "ab") as out:
            out.write(line)


def read_pairs(path: str) -> Iterator[dict[str, Any]]:
    """Every pair in the log; a line that is not a JSON object (a torn write) is skipped."""
    with open(path, "rb") as source:
        for line in source:
            try:
                pair = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(pair, dict) and "local" in pair and "shadow" in pair:
                yield pair
