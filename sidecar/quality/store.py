"""Where shadow pairs are kept: one JSON object a line, appended off the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

log = logging.getLogger("sidecar.quality")


class PairStore:
    """Appends pairs to `path` until it holds `max_bytes`; then drops them, saying so once
    (review and move the log to start another)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self.full = False

    async def append(self, pair: Mapping[str, Any]) -> None:
        line = orjson.dumps(pair) + b"\n"
        try:
            await asyncio.to_thread(self._write, line)
        except OSError as exc:
            log.warning("quality pair not written to %s: %s", self.path, type(exc).__name__)

    def _write(self, line: bytes) -> None:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(self.path, "ab") as out:
            if out.tell() + len(line) > self._max_bytes:
                if not self.full:
                    self.full = True
                    log.warning(
                        "quality log %s is full (quality_monitoring.max_log_mb): pairs dropped",
                        self.path,
                    )
                return
            self.full = False
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
