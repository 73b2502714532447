"""What the process's long-lived parts share: start, stop with a grace, `async with`."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifecycle:
    """Subclasses implement `start` and `stop`; `async with` starts and then stops with
    a one-second grace, as tests and embedders want."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self, grace: float) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=1.0)
