"""Budgets: prices, caps, the ledger and the spend log of one engine, composed.

    reserve(deployment, request)   before a cloud call: its worst case held on every cap
    settle(ticket, ...)            after it: the actual cost in place of the hold, once
    view()                         a snapshot of what is left, for the pure planner
    record(spend record)           onto the spend log's queue
    status() / report(query)       caps with their headroom; spend rows and daily totals

The snapshot the planner reads is kept up to date by this process's own reservations and
settlements, and refreshed from the ledger every `refresh_interval` so spend by other
sidecars sharing it shows too; the reservation itself is the authority. Local
deployments never get here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sidecar.budget.budgets import MICROS_PER_USD, Budget, BudgetBook
from sidecar.budget.ledger import Hold, Ledger, StoreUnavailable, Usage
from sidecar.budget.prices import PICO_PER_USD, Price, micros, resolve_prices
from sidecar.budget.spendlog import SpendLog, SpendStore
from sidecar.budget.stores.postgres import PostgresSpendStore
from sidecar.budget.stores.redis import RedisLedger
from sidecar.budget.stores.sqlite import SqliteDatabase, SqliteLedger, SqliteSpendStore
from sidecar.budget.windows import Window, window_at
from sidecar.budget.worstcase import WorstCase, worst_case
from sidecar.config.model import Deployment, SidecarConfig
from sidecar.errors import (
    BudgetExceeded,
    BudgetRefused,
    ConfigError,
    LedgerUnavailable,
    SpendUnavailable,
)
from sidecar.types import (
    BudgetStatus,
    ChatRequest,
    Locality,
    SpendQuery,
    SpendRecord,
    SpendReport,
)
from sidecar.types import (
    Usage as TokenUsage,
)

log = logging.getLogger("sidecar.budget")

# Seconds within which a cap's reset is near enough to tell a refused caller to retry.
_RETRY_HINT_WITHIN = 3600.0
# Counter keys this process keeps fresh in its snapshot beyond the configured caps
# (callers under the default cap), at most.
_SEEN_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Charge:
    """One cap in the window a call falls in."""

    budget: Budget
    window: Window | None

    @property
    def key(self) -> str:
        return f"{self.budget.id}@{'all' if self.window is None else self.window.start}"

    @property
    def hold(self) -> Hold:
        return Hold(self.key, self.budget.cap, None if self.window is None else self.window.end)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A cloud call's reservation, to settle once the call is over."""

    reservation: str
    deployment: Deployment
    price: Price
    case: WorstCase
    charges: tuple[Charge, ...]
    amount: int  # micro-dollars held
    held: bool  # False when the ledger was not asked (no cap applies, or it failed open)


def caller_of(request: ChatRequest) -> str:
    return request.metadata.get("caller", "")


class Budgets:
    def __init__(
        self,
        config: SidecarConfig,
        *,
        data_dir: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        settings = config.budget
        self.prices = resolve_prices(config)
        self.book = BudgetBook(config)
        self.wall = wall
        self._settings = settings
        self._db = SqliteDatabase(data_dir if data_dir is not None else settings.data_dir)
        self.ledger: Ledger = self._ledger(config)
        database_url = config.general_settings.database_url
        shared: SpendStore | None = None
        if database_url:
            shared = PostgresSpendStore(database_url)
        self.spend_log = SpendLog(
            SqliteSpendStore(self._db),
            shared,
            queue_size=settings.spend_log_queue,
            batch=settings.spend_log_batch,
            interval=settings.spend_log_interval,
        )
        self._fail_open = settings.on_ledger_error == "fail_open"
        # What this process knows each counter holds: the planner's snapshot.
        self._usage: dict[str, Usage] = {}
        self._seen: dict[str, Charge] = {}
        # Settlements the ledger could not take yet, retried by the sweep.
        self._unsettled: dict[str, tuple[tuple[str, ...], int]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @staticmethod
    def rules(config: SidecarConfig) -> tuple[dict[str, Price], BudgetBook]:
        """The prices and caps of a configuration, for `reconfigure`; no state is touched,
        so a reload computes them off the event loop. Raises ConfigError (a cloud
        deployment with no price)."""
        return resolve_prices(config), BudgetBook(config)

    def reconfigure(self, rules: tuple[dict[str, Price], BudgetBook]) -> None:
        """The caps and prices of a reloaded configuration. The ledger's counters carry on,
        keyed by budget and window; the stores stay those the process started with."""
        self.prices, self.book = rules

    def _ledger(self, config: SidecarConfig) -> Ledger:
        settings = config.budget
        kind = settings.ledger
        if kind == "auto":
            kind = "redis" if settings.redis_url else "sqlite"
        if kind == "sqlite":
            return SqliteLedger(self._db)
        if not settings.redis_url:
            raise ConfigError(
                [
                    "budget.ledger: 'redis' needs an address: router_settings.redis_host "
                    "(redis_port, redis_password), budget.redis_url or $REDIS_URL"
                ],
                config.source,
            )
        return RedisLedger(settings.redis_url, settings.redis_prefix)

    async def start(self) -> None:
        await self._db.open()
        await self.ledger.start()
        await self.spend_log.start()
        await self._refresh()
        self._sweeper = asyncio.create_task(self._sweep(), name="budget sweep")

    # -- the planner's snapshot ------------------------------------------------------

    def view(self) -> BudgetView:
        return BudgetView(self, self.wall())

    def charges(self, deployment: Deployment, caller: str, now: float) -> tuple[Charge, ...]:
        return tuple(
            Charge(budget, window_at(budget.duration, now))
            for budget in self.book.for_call(deployment, caller)
        )

    def worst_case(self, deployment: Deployment, request: ChatRequest) -> tuple[WorstCase, int]:
        """The call's bounds and the micro-dollars they may cost."""
        price = self.prices[deployment.id]
        case = worst_case(deployment, request, price, self._settings.default_answer_tokens)
        return case, micros(price.worst(case.prompt_bound, case.answer_room))

    def exceeded(
        self, charges: Iterable[Charge], amount: int, model: str, now: float
    ) -> BudgetExceeded | None:
        """The first cap the snapshot says cannot take `amount` more."""
        usage = self._usage
        for charge in charges:
            held = usage.get(charge.key)
            spent = 0 if held is None else held.spent + held.reserved
            if spent + amount > charge.budget.cap:
                return _exceeded(charge, spent, model, now)
        return None

    # -- reserve and settle ----------------------------------------------------------

    async def reserve(
        self, deployment: Deployment, request: ChatRequest, lifetime: float
    ) -> tuple[Ticket, ChatRequest]:
        """Hold the call's worst case on every cap it counts toward; raise BudgetRefused
        when one has no room, LedgerUnavailable when the ledger cannot say (fail closed).
        Returns the ticket and the request to send (with max_tokens when it had none)."""
        case, amount = self.worst_case(deployment, request)
        now = self.wall()
        charges = self.charges(deployment, caller_of(request), now)
        reservation = f"{request.request_id or 'call'}:{uuid.uuid4().hex[:16]}"
        held = bool(charges)
        if held:
            try:
                expires = now + lifetime + self._settings.reservation_grace
                refusal = await self.ledger.reserve(
                    reservation, [c.hold for c in charges], amount, expires
                )
            except StoreUnavailable as exc:
                if not self._fail_open:
                    raise LedgerUnavailable(
                        deployment.id, f"cloud call not made: {exc} (budget.on_ledger_error)"
                    ) from exc
                log.warning("%s: cloud call on %s let through unmetered", exc, deployment.id)
                held = False
            else:
                if refusal is not None:
                    self._usage[refusal.key] = Usage(refusal.spent, refusal.reserved)
                    charge = next(c for c in charges if c.key == refusal.key)
                    exceeded = _exceeded(
                        charge, refusal.spent + refusal.reserved, deployment.model_group, now
                    )
                    raise BudgetRefused(deployment.id, exceeded)
                self._move(charges, reserved=amount)
        ticket = Ticket(
            reservation, deployment, self.prices[deployment.id], case, charges, amount, held
        )
        if case.limit_upstream:
            params = dataclasses.replace(request.params, max_tokens=case.answer_room)
            request = dataclasses.replace(request, params=params)
        return ticket, request

    async def settle(
        self, ticket: Ticket, usage: TokenUsage | None, chunks: int, chars: int, *, billed: bool
    ) -> float:
        """Charge what the provider bills in place of the hold; return it in USD.

        With reported usage, that usage. Without: nothing when the call failed before
        the provider billed (`billed` False and no chunk); the prompt and the tokens
        relayed when the answer was cut short; the whole hold when nothing is known.
        """
        pico = _billed(ticket, usage, chunks, chars, billed=billed)
        actual = micros(pico)
        if ticket.held:
            keys = tuple(c.key for c in ticket.charges)
            self._move(ticket.charges, reserved=-ticket.amount, spent=actual)
            try:
                await self.ledger.settle(ticket.reservation, keys, actual)
            except StoreUnavailable as exc:
                log.warning("%s: settlement of %s retried later", exc, ticket.reservation)
                self._unsettled[ticket.reservation] = (keys, actual)
        return pico / PICO_PER_USD

    def _move(self, charges: Iterable[Charge], *, reserved: int = 0, spent: int = 0) -> None:
        usage = self._usage
        for charge in charges:
            key = charge.key
            was = usage.get(key, Usage())
            usage[key] = Usage(was.spent + spent, max(0, was.reserved + reserved))
            if key not in self._seen and len(self._seen) < _SEEN_KEYS:
                self._seen[key] = charge

    async def record(self, record: SpendRecord) -> None:
        await self.spend_log.put(record)

    # -- reports ---------------------------------------------------------------------

    async def status(self) -> tuple[BudgetStatus, ...]:
        """Every configured cap, and callers' caps seen here, in their current window."""
        now = self.wall()
        charges = {c.key: c for c in self._current(now)}
        try:
            fresh = await self.ledger.usage(list(charges))
        except StoreUnavailable:
            fresh = {key: self._usage[key] for key in charges if key in self._usage}
        return tuple(_status(charge, fresh.get(key, Usage())) for key, charge in charges.items())

    def known_status(self) -> tuple[BudgetStatus, ...]:
        """Every configured cap as this process last saw it, without asking the ledger
        (for gauges: no I/O)."""
        now = self.wall()
        charges = [Charge(b, window_at(b.duration, now)) for b in self.book.configured()]
        return tuple(_status(c, self._usage.get(c.key, Usage())) for c in charges)

    async def report(self, query: SpendQuery) -> SpendReport:
        reader = self.spend_log.reader
        try:
            rows = await reader.rows(query)
            daily = await reader.daily(dataclasses.replace(query, request_id=""))
        except StoreUnavailable as exc:
            raise SpendUnavailable(f"spend report unavailable: {exc}") from exc
        return SpendReport(tuple(rows), tuple(daily), await self.status())

    def _current(self, now: float) -> list[Charge]:
        charges = [Charge(b, window_at(b.duration, now)) for b in self.book.configured()]
        known = {c.key for c in charges}
        for key, charge in list(self._seen.items()):
            if charge.window is not None and charge.window.end <= now:
                del self._seen[key]
                self._usage.pop(key, None)
                continue
            if key not in known:
                charges.append(charge)
        return charges

    # -- background ------------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._settings.refresh_interval)
            try:
                await self._retry_settlements()
                await self.ledger.expire(self.wall())
                await self._refresh()
            except StoreUnavailable as exc:
                log.debug("budget sweep skipped: %s", exc)

    async def _refresh(self) -> None:
        keys = [c.key for c in self._current(self.wall())]
        if not keys:
            return
        try:
            fresh = await self.ledger.usage(keys)
        except StoreUnavailable:
            return
        for key in keys:
            self._usage[key] = fresh.get(key, Usage())

    async def _retry_settlements(self) -> None:
        for reservation, (keys, actual) in list(self._unsettled.items()):
            await self.ledger.settle(reservation, keys, actual)
            del self._unsettled[reservation]

    async def aclose(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        with contextlib.suppress(StoreUnavailable):
            await self._retry_settlements()
        if self._unsettled:
            log.warning(
                "%d settlements not recorded: the ledger will charge those reservations in "
                "full when they expire",
                len(self._unsettled),
            )
        await self.spend_log.aclose()
        await self.ledger.aclose()
        await self._db.close()


class BudgetView:
    """What is left on each cap, as of one moment: the planner's budget snapshot."""

    __slots__ = ("_budgets", "_now")

    def __init__(self, budgets: Budgets, now: float) -> None:
        self._budgets = budgets
        self._now = now

    def exceeded(self, deployment: Deployment, request: ChatRequest) -> BudgetExceeded | None:
        """Why `deployment` cannot take `request` within its caps, or None when it can."""
        if deployment.locality is Locality.LOCAL:
            return None
        budgets = self._budgets
        charges = budgets.charges(deployment, caller_of(request), self._now)
        if not charges:
            return None
        _, amount = budgets.worst_case(deployment, request)
        return budgets.exceeded(charges, amount, deployment.model_group, self._now)


def _billed(
    ticket: Ticket, usage: TokenUsage | None, chunks: int, chars: int, *, billed: bool
) -> int:
    price = ticket.price
    if (
        usage is not None
        and usage.prompt_tokens is not None
        and usage.completion_tokens is not None
    ):
        return price.cost(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens or 0,
            usage.cache_write_tokens or 0,
        )
    if chunks == 0:
        if not billed:
            return 0
        return price.worst(ticket.case.prompt_bound, ticket.case.answer_room)
    # Cut short: the prompt, and at least the tokens relayed (about 3 characters or one
    # chunk each, whichever counts more).
    relayed = max(chunks, -(-chars // 3))
    completion = (
        relayed if usage is None or usage.completion_tokens is None else usage.completion_tokens
    )
    prompt = (
        ticket.case.prompt_estimate
        if usage is None or usage.prompt_tokens is None
        else usage.prompt_tokens
    )
    return price.cost(prompt, completion)


def _exceeded(charge: Charge, spent: int, model: str, now: float) -> BudgetExceeded:
    window = charge.window
    exceeded = BudgetExceeded(
        charge.budget.id,
        charge.budget.cap / MICROS_PER_USD,
        spent / MICROS_PER_USD,
        None if window is None else float(window.end),
        model,
    )
    # A retry hint only when waiting is a reasonable answer, never for next month.
    if window is not None and window.end - now <= _RETRY_HINT_WITHIN:
        exceeded.retry_after = max(0.0, window.end - now)
    return exceeded


def _status(charge: Charge, usage: Usage) -> BudgetStatus:
    window = charge.window
    return BudgetStatus(
        budget=charge.budget.id,
        cap=charge.budget.cap / MICROS_PER_USD,
        spent=usage.spent / MICROS_PER_USD,
        reserved=usage.reserved / MICROS_PER_USD,
        duration=charge.budget.duration,
        window_start=None if window is None else float(window.start),
        resets_at=None if window is None else float(window.end),
    )
