"""The progress bar: one tqdm bar per scenario, over the steps the scenario planned.

Scenarios call `advance(note)` after each step; a phase that is one long await
(an open-loop run of N seconds) ticks on a timer with `ticking` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from tqdm import tqdm

from benchmarks.suite import Progress


class Bar:
    """A scenario's bar on stderr; `enabled=False` draws nothing."""

    def __init__(self, name: str, total: int, *, enabled: bool) -> None:
        self._bar = tqdm(
            total=total,
            desc=f"{name:<9}",
            unit="step",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="{desc} {percentage:3.0f}%|{bar:30}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}]{postfix}",
        )

    def advance(self, note: str = "") -> None:
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


@contextlib.contextmanager
def bar(name: str, total: int, *, enabled: bool) -> Iterator[Bar]:
    b = Bar(name, total, enabled=enabled)
    try:
        yield b
    finally:
        b.close()


@asynccontextmanager
async def ticking(progress: Progress, seconds: float, steps: int, note: str) -> AsyncIterator[None]:
    """Advance `progress` `steps` times evenly over `seconds` while the body runs; whatever
    is left when the body ends (early or late) is advanced at once."""
    done = 0

    async def tick() -> None:
        nonlocal done
        for _ in range(steps):
            await asyncio.sleep(seconds / max(steps, 1))
            done += 1
            progress.advance(f"{note} {done}/{steps}")

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(steps - done):
            done += 1
            progress.advance(note)
