"""Injectable time.

Everything that waits or expires (TTLs, leases, timers, backoff) takes a
``Clock``. Production uses ``SystemClock``; unit tests use ``FakeClock`` and
move time forward by hand, so no test sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds: for durations, deadlines and expiry."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch: for timestamps people read."""

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told to; sleepers wake as time passes them."""

    def __init__(self, start: float = 1_000.0, *, wall_offset: float = 1.7e9) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def sleep(self, seconds: float) -> asyncio.Future[None]:
        """Wake once the clock has moved ``seconds`` past now, counted from this
        call: a sleep wrapped in a task (``first_of``, ``ensure_future``) first
        runs a turn later, by when a test may have moved the clock, and a
        deadline taken then would come later than asked (the test then waits
        for a time it never moves the clock to)."""
        if seconds <= 0:
            return asyncio.ensure_future(asyncio.sleep(0))  # a turn of the loop, as before
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        return future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now} sleepers={len(self._sleepers)}>"


def every(clock: Clock, interval_s: float, action: Callable[[], Any]) -> asyncio.Task[None]:
    """Run ``action`` (plain or async) every ``interval_s`` for as long as the loop
    lives; a failure is logged and the next turn comes as usual."""

    async def loop() -> None:
        while True:
            await clock.sleep(interval_s)
            try:
                result = action()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # e.g. the store away for a moment: next time then
                log.exception("periodic %s failed", getattr(action, "__qualname__", action))

    return asyncio.create_task(loop())
