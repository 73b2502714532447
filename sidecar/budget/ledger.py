"""The ledger: spent and reserved micro-dollars per budget window, behind one interface.

    Ledger                 reserve / settle / usage / expire, atomic in the store itself
    ├── SqliteLedger       embedded default, one file in the data directory (stores/sqlite.py)
    └── RedisLedger        shared by every sidecar of a fleet (stores/redis.py)

A counter is keyed by budget and window (`<budget id>@<window start>`), so a rollover is
a new key. A reservation names the keys it holds; settling it moves its amount from
reserved to the actual cost on each, once: settling again, or settling a reservation the
expiry sweep already charged at its worst case, changes nothing.

Stores raise `StoreUnavailable` when they cannot be reached; the caller decides what a
cloud call does then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer; the message is our own words."""


@dataclass(frozen=True, slots=True)
class Hold:
    """One budget window a reservation counts against."""

    key: str
    cap: int  # micro-dollars
    expires_at: int | None  # unix seconds after which the counter may be dropped


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first hold that had no room: its key and what it had spent and reserved."""

    key: str
    spent: int
    reserved: int


@dataclass(frozen=True, slots=True)
class Usage:
    spent: int = 0
    reserved: int = 0


class Ledger(Protocol):
    async def start(self) -> None: ...

    async def reserve(
        self, reservation: str, holds: Sequence[Hold], amount: int, expires_at: float
    ) -> Refusal | None:
        """Hold `amount` on every key at once if each has room under its cap; else hold
        nothing and say which refused. `expires_at` is when an unsettled reservation is
        charged in full."""
        ...

    async def settle(self, reservation: str, keys: Sequence[str], actual: int) -> bool:
        """Charge `actual` in place of the reservation; False when it was settled already."""
        ...

    async def usage(self, keys: Sequence[str]) -> Mapping[str, Usage]: ...

    async def expire(self, now: float) -> int:
        """Settle, at their full amount, reservations whose time ran out; return how many."""
        ...

    async def aclose(self) -> None: ...
