"""Lease-based near caching, client side: local copies and following their owners.

A ``NearCache`` keeps values read from owner actors (cache shards, later
session stores) for at most the lease each owner granted, in a small LRU. It
follows every owner it holds copies from with one long-poll each
(``poll_invalidations``) and drops a key as soon as its owner says it changed.
The owner side, and why this is coherent, is ``actors.runtime.leases``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors.runtime.clock import Clock
from actors.runtime.fanout import follow
from actors.runtime.supervision import ActorRef

log = logging.getLogger(__name__)


class NearCache:
    """Local copies of values, each valid until its lease deadline.

    ``generation`` guards against a race: a value fetched before an
    invalidation of its key arrived must not be kept when its answer lands
    after it. Callers note ``generation`` before fetching and pass it to
    ``offer``; any invalidation of the key since then refuses the offer.
    """

    def __init__(self, clock: Clock, *, max_entries: int, owners: Sequence[ActorRef] = ()) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self.owners = list(owners)
        self.follower = uuid.uuid4().hex  #: this cache's id at the owners
        self._pollers: dict[int, asyncio.Task[None]] = {}
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._invalidated_at: dict[str, int] = {}
        self._cleared_at = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, key: str) -> Any:
        found = self._entries.get(key)
        if found is None or found[1] <= self.clock.now():
            if found is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[0]

    def offer(self, key: str, value: Any, deadline: float, since: int) -> None:
        if self._cleared_at > since or self._invalidated_at.get(key, -1) > since:
            return
        if deadline <= self.clock.now():
            return
        self._entries[key] = (value, deadline)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key: str) -> None:
        self.generation += 1
        self._entries.pop(key, None)
        self._invalidated_at[key] = self.generation
        if len(self._invalidated_at) > 4 * self.max_entries:
            self.clear()  # bounded memory; clearing is always safe

    def clear(self) -> None:
        self.generation += 1
        self._cleared_at = self.generation
        self._entries.clear()
        self._invalidated_at.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def read_through(
        self,
        index: int,
        keys: list[str],
        fetch: Callable[[list[str]], Awaitable[list[tuple[Any, float]]]],
    ) -> list[Any]:
        """Read ``keys`` from owner ``index`` with ``fetch`` (answering
        ``(value, lease_s)`` per key, None for a missing one) and keep each value
        here until its lease ends, counted from before the request left, so a
        copy never outlives the owner's lease; a key invalidated meanwhile is
        not kept. The owner is followed first, so no invalidation is missed."""
        self.follow(index)
        since, started = self.generation, self.clock.now()
        answers = await fetch(keys)
        for key, (value, lease) in zip(keys, answers, strict=True):
            if value is not None and lease > 0:
                self.offer(key, value, started + lease, since)
        return [value for value, _ in answers]

    # --- following the owners ------------------------------------------

    def follow(self, index: int) -> None:
        """Make sure owner ``index`` is followed (call before reading from it)."""
        task = self._pollers.get(index)
        if task is None or task.done():
            self._pollers[index] = asyncio.create_task(self._poll(index))

    async def _poll(self, index: int) -> None:
        """Follow one owner's invalidations for as long as this cache lives."""
        owner, incarnation = self.owners[index], None

        async def pull(after: int) -> list[tuple[int, str]]:
            nonlocal incarnation
            seen, messages = await owner.call(
                "poll_invalidations", self.follower, after, incarnation
            )
            if seen != incarnation:
                if incarnation is not None:
                    self.clear()  # the owner restarted: its leases are gone
                incarnation = seen
            return list(messages)

        def lost(_: BaseException) -> None:
            nonlocal incarnation
            self.clear()  # the owner is gone or restarting: drop its copies
            incarnation = None

        await follow(pull, self.invalidate, what=f"near cache following owner {index}",
                     on_lost=lost)  # fmt: skip

    async def close(self) -> None:
        """Stop following; the owners forget this cache's leases."""
        for task in self._pollers.values():
            task.cancel()
        self._pollers.clear()
        self.clear()
        await asyncio.gather(
            *(owner.call("forget_follower", self.follower) for owner in self.owners),
            return_exceptions=True,
        )

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "hits": self.hits, "misses": self.misses}

    def __repr__(self) -> str:
        return (
            f"<NearCache entries={len(self._entries)} hits={self.hits} misses={self.misses} "
            f"follower={self.follower[:8]}>"
        )
