"""A partition's timers: events at wall-clock times, one asyncio timer for them all.

The events wait in a heap; one task sleeps (on the injected clock) until the
earliest, hands every event that is due to ``on_due`` in time order, and
sleeps again until the next. An event earlier than the one armed re-arms the
timer; a later one only joins the heap. So a partition with many schedules
has one sleeping task and nothing polls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

from actors.runtime.clock import Clock

E = TypeVar("E")


class Timers(Generic[E]):
    """Events of type ``E`` due at ms since the epoch; ``on_due(event)`` once each is due.

    Nothing is armed before ``start`` or after ``stop``: a partition starts its
    timers once it has recovered, and a stopped one fires nothing more.
    """

    def __init__(self, clock: Clock, on_due: Callable[[E], None]) -> None:
        self.clock = clock
        self._on_due = on_due
        #: (at ms, arrival order, event): the order keeps events of one ms in arrival order.
        self._heap: list[tuple[int, int, E]] = []
        self._order = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._armed_at: int | None = None
        self.running = False

    def start(self) -> None:
        self.running = True
        self._rearm()

    def stop(self) -> None:
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = None

    def push(self, at_ms: int, event: E) -> None:
        """Hand ``event`` to ``on_due`` at ``at_ms`` (at once if that has passed)."""
        if not self.running:
            return
        heapq.heappush(self._heap, (at_ms, next(self._order), event))
        if self._armed_at is None or at_ms < self._armed_at:
            self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._heap or not self.running:
            self._armed_at = None
            return
        self._armed_at = self._heap[0][0]
        self._timer = asyncio.create_task(self._wait(self._armed_at))

    async def _wait(self, at_ms: int) -> None:
        delay_s = (at_ms - self.clock.time() * 1000) / 1000
        if delay_s > 0:
            await self.clock.sleep(delay_s)
        self._timer = None
        self._armed_at = None
        now_ms = self.clock.time() * 1000
        while self._heap and self._heap[0][0] <= now_ms:
            self._on_due(heapq.heappop(self._heap)[2])
        self._rearm()

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"<Timers events={len(self._heap)} armed_at={self._armed_at}>"


__all__ = ["Timers"]
