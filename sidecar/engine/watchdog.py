"""Idle-gap and total-time limits for a relay, at no per-token timer cost.

A timer per token (`asyncio.timeout` around each read) would allocate and
cancel a timer handle for every relayed token. The watchdog instead keeps one
timer that wakes at most once per idle period: the relay only stores the time
it started waiting, and the timer decides whether that wait is too long.
Time the caller spends writing does not count as an idle upstream.
"""

from __future__ import annotations

import asyncio

from sidecar.clock import Cancellable, Clock


class Watchdog:
    __slots__ = (
        "_cancelled",
        "_clock",
        "_end",
        "_handle",
        "_idle",
        "_task",
        "expired",
        "waiting_since",
    )

    def __init__(self, clock: Clock, idle: float, end: float | None) -> None:
        self._clock = clock
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Watchdog must be created inside a task")
        self._task = task
        self._idle = idle
        self._end = end
        # Clock time at which the relay began awaiting the upstream, None while not waiting.
        self.waiting_since: float | None = None
        # Why the watchdog cancelled the task ("idle" or "total"), None while it has not.
        self.expired: str | None = None
        self._cancelled = False
        self._handle: Cancellable | None = None
        self._arm(clock.now() + idle)

    def _arm(self, when: float) -> None:
        if self._end is not None:
            when = min(when, self._end)
        self._handle = self._clock.call_at(when, self._check)

    def _check(self) -> None:
        self._handle = None
        now = self._clock.now()
        waiting = self.waiting_since
        if self._end is not None and now >= self._end:
            self._expire("total", cancel=waiting is not None)
        # Compared with the time the timer was armed for, not as a difference: (w + i) - w
        # can round below i, and the timer would then re-arm for the very same instant.
        elif waiting is not None and now >= waiting + self._idle:
            self._expire("idle", cancel=True)
        else:
            self._arm((waiting if waiting is not None else now) + self._idle)

    def _expire(self, reason: str, *, cancel: bool) -> None:
        # Only a task blocked on the upstream is cancelled; one busy writing to its
        # caller sees `expired` at its next read instead, so the cancellation never
        # lands inside the front door's own I/O.
        self.expired = reason
        if cancel:
            self._cancelled = True
            self._task.cancel()

    def claims(self) -> bool:
        """True when the task's pending cancellation is this watchdog's and nobody else's."""
        return self._cancelled and self._task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
