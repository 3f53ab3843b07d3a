"""Fan-out by long-poll, both halves: ``Mailboxes`` in the owner, ``follow`` in the follower.

An actor cannot call into the processes that follow it, so followers pull:
each keeps one ``pull`` call outstanding; the actor answers it as soon as
something is posted for that follower (or when the poll times out). A pull
carries the cursor of the last message the follower has handled, which
acknowledges everything up to it; ``wait_acked`` lets the poster wait for that
acknowledgement, bounded by a deadline. ``follow`` is the follower's loop:
pull, deliver, advance the cursor, and start over after a backoff when the
owner is lost. Near-cache invalidation and pub/sub use them; chat, push and
game fan-out are built on the same pieces.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from actors.runtime import metrics
from actors.runtime.backoff import RECONNECT, Backoff, retrying
from actors.runtime.clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Mailbox:
    messages: deque[tuple[int, Any]] = field(default_factory=deque)
    last_seq: int = 0  #: number of the last message posted
    acked: int = 0  #: the follower has handled everything up to here
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    ack_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    last_pull: float = 0.0
    #: When the oldest message not yet handed out was posted (None: there is none).
    oldest_new_at: float | None = None


class Mailboxes:
    """``name`` labels the fan-out lag this owner reports (``realm_fanout_lag_seconds``)."""

    def __init__(self, clock: Clock, *, max_pending: int = 100_000, name: str = "other") -> None:
        self.clock = clock
        self.max_pending = max_pending
        self.name = name
        self._boxes: dict[str, _Mailbox] = {}

    def __contains__(self, follower: str) -> bool:
        return follower in self._boxes

    def _box(self, follower: str) -> _Mailbox:
        box = self._boxes.get(follower)
        if box is None:
            box = self._boxes[follower] = _Mailbox(last_pull=self.clock.now())
        return box

    def register(self, follower: str) -> None:
        """Open a mailbox for ``follower`` before its first pull arrives."""
        self._box(follower)

    def drop_idle(self, idle_s: float) -> list[str]:
        """Drop followers that have not pulled for ``idle_s``; returns them."""
        cutoff = self.clock.now() - idle_s
        idle = [name for name, box in self._boxes.items() if box.last_pull < cutoff]
        for name in idle:
            self.drop(name)
        return idle

    def post(self, follower: str, message: Any) -> int:
        """Queue ``message`` for ``follower``; returns its number."""
        box = self._box(follower)
        box.last_seq += 1
        box.messages.append((box.last_seq, message))
        if box.oldest_new_at is None:
            box.oldest_new_at = self.clock.now()
        while len(box.messages) > self.max_pending:
            box.messages.popleft()  # the follower is far behind; deadlines cover it
        box.arrived.set()
        return box.last_seq

    async def pull(self, follower: str, *, after: int, timeout_s: float) -> list[tuple[int, Any]]:
        """Acknowledge up to ``after``; return what came later, waiting up to ``timeout_s``."""
        box = self._box(follower)
        box.last_pull = self.clock.now()
        self._ack(box, after)
        if not box.messages:
            box.arrived.clear()
            await first_of(box.arrived.wait(), self.clock.sleep(timeout_s))
            box = self._boxes.get(follower, box)
        if box.oldest_new_at is not None and box.messages:
            lag_s = max(0.0, self.clock.now() - box.oldest_new_at)
            metrics.FANOUT_LAG_SECONDS.observe(lag_s, owner=self.name)
            box.oldest_new_at = None
        return list(box.messages)

    def _ack(self, box: _Mailbox, seq: int) -> None:
        if seq <= box.acked:
            return
        box.acked = min(seq, box.last_seq)
        while box.messages and box.messages[0][0] <= box.acked:
            box.messages.popleft()
        if not box.messages:
            box.oldest_new_at = None
        still_waiting = []
        for wanted, future in box.ack_waiters:
            if wanted <= box.acked:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((wanted, future))
        box.ack_waiters = still_waiting

    async def wait_acked(self, follower: str, seq: int, *, deadline: float) -> bool:
        """Wait until ``follower`` has handled message ``seq`` or ``deadline`` passes."""
        box = self._boxes.get(follower)
        if box is None or box.acked >= seq:
            return True
        remaining = deadline - self.clock.now()
        if remaining <= 0:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box.ack_waiters.append((seq, future))
        await first_of(future, self.clock.sleep(remaining))
        return future.done() and not future.cancelled()

    def drop(self, follower: str) -> None:
        """Forget ``follower``; anyone waiting for its acknowledgement stops waiting."""
        box = self._boxes.pop(follower, None)
        if box is None:
            return
        for _, future in box.ack_waiters:
            if not future.done():
                future.set_result(None)
        box.arrived.set()

    def idle_since(self, follower: str) -> float | None:
        box = self._boxes.get(follower)
        return None if box is None else box.last_pull

    def followers(self) -> list[str]:
        return list(self._boxes)

    def __len__(self) -> int:
        return len(self._boxes)

    def __repr__(self) -> str:
        pending = sum(len(box.messages) for box in self._boxes.values())
        return f"<Mailboxes followers={len(self._boxes)} pending={pending}>"


async def first_of(*awaitables: Any) -> None:
    """Wait for the first of ``awaitables`` to finish; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # the caller reads outcomes from the originals


async def follow(
    pull: Callable[[int], Awaitable[Sequence[tuple[int, T]]]],
    deliver: Callable[[T], None],
    *,
    what: str,
    on_lost: Callable[[BaseException], Awaitable[None] | None] | None = None,
    backoff: Backoff = RECONNECT,
) -> NoReturn:
    """Follow one owner for as long as the calling task lives.

    ``pull(after)`` long-polls the owner for the ``(seq, item)`` pairs that came
    after cursor ``after`` (acknowledging everything up to it); each item goes
    to ``deliver`` and the cursor moves to its seq. When a pull fails, the
    owner is lost (restarting, or it forgot this follower): ``on_lost(error)``
    drops whatever depended on it (and may register again), the cursor starts
    over from 0, and the next pull waits a backoff; the first failure of a
    streak is logged.
    """
    after = 0
    while True:
        async for attempt in retrying(on=Exception, backoff=backoff, log=log, what=what):
            with attempt:
                try:
                    items = await pull(after)
                except Exception as error:
                    after = 0
                    if on_lost is not None:
                        outcome = on_lost(error)
                        if outcome is not None:
                            await outcome
                    raise
        for seq, item in items:
            deliver(item)
            after = seq
