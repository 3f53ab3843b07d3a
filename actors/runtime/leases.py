"""Lease-based near caching, server side: who may hold which key until when.

An actor that owns keys (a cache shard now; session stores and the like
later) lets followers keep copies of values for at most one lease. Before a
write to a key is acknowledged, ``invalidate`` tells every holder and waits
until each has confirmed (through ``fanout.Mailboxes``) or its lease has run
out. So no follower serves a value after a write to it is acknowledged, and a
follower that stopped answering delays writers by at most one lease (the
classic lease-based coherence of Gray and Cheriton).

An actor restarted by Ray has forgotten who holds what: ``hold_writes`` makes
its first writes wait one lease, until every copy granted before the crash
has expired. Followers learn of restarts from the incarnation id that every
poll answers with, and drop their copies.

The client side is ``actors.runtime.near_cache``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

from actors.runtime.clock import Clock
from actors.runtime.fanout import Mailboxes

#: How long a follower's long-poll waits before answering empty.
POLL_TIMEOUT_S = 10.0
#: A follower silent for this long (plus one lease) is gone.
FOLLOWER_IDLE_S = 3 * POLL_TIMEOUT_S


class Leases:
    def __init__(self, clock: Clock, *, lease_s: float) -> None:
        self.clock = clock
        self.lease_s = lease_s
        self.incarnation = uuid.uuid4().hex
        self._holders: dict[str, dict[str, float]] = {}  #: key -> follower -> deadline
        self._followers = Mailboxes(clock, name="leases")
        self._writes_open_at = 0.0
        self.invalidations = 0  #: invalidations sent so far

    def grant(self, key: str, follower: str, *, expires_in_s: float | None = None) -> float:
        """Let ``follower`` keep ``key``; returns for how long (capped by the value's expiry)."""
        lease = self.lease_s if expires_in_s is None else min(self.lease_s, expires_in_s)
        self._holders.setdefault(key, {})[follower] = self.clock.now() + lease
        self._followers.register(follower)  # so an invalidation can reach it before its first poll
        return lease

    def hold_writes(self) -> None:
        """After a restart: make writes wait until leases granted before it have ended."""
        self._writes_open_at = self.clock.now() + self.lease_s

    async def before_write(self) -> None:
        wait = self._writes_open_at - self.clock.now()
        if wait > 0:
            await self.clock.sleep(wait)

    def invalidate(self, keys: list[str]) -> list[Awaitable[Any]]:
        """Tell every holder of ``keys`` to drop them; await the result to know they
        all have, or that their leases ran out. Called after the write is applied."""
        now, waits = self.clock.now(), list[Awaitable[Any]]()
        for key in keys:
            for follower, deadline in self._holders.pop(key, {}).items():
                if deadline <= now:
                    continue
                if follower in self._followers:
                    seq = self._followers.post(follower, key)
                    waits.append(self._followers.wait_acked(follower, seq, deadline=deadline))
                    self.invalidations += 1
                else:  # forgotten while its lease lasts: wait the lease out
                    waits.append(self.clock.sleep(deadline - now))
        return waits

    def held_keys(self) -> list[str]:
        return list(self._holders)

    async def poll(
        self, follower: str, after: int, incarnation: str | None, timeout_s: float
    ) -> tuple[str, list[tuple[int, str]]]:
        """A follower's long-poll: acknowledge up to ``after``, return later invalidations.

        A cursor from another incarnation acknowledges nothing."""
        if incarnation != self.incarnation:
            after = 0
        messages = await self._followers.pull(follower, after=after, timeout_s=timeout_s)
        return self.incarnation, messages

    def forget(self, follower: str) -> None:
        """The follower has dropped its copies (it closed): release writers waiting on it."""
        self._followers.drop(follower)
        for holders in self._holders.values():
            holders.pop(follower, None)

    def sweep(self) -> None:
        """Forget ended leases, and followers that stopped polling (their leases ended too)."""
        now = self.clock.now()
        ended = [
            k for k, holders in self._holders.items() if max(holders.values(), default=0) <= now
        ]
        for key in ended:
            del self._holders[key]
        self._followers.drop_idle(FOLLOWER_IDLE_S + self.lease_s)

    def followers(self) -> int:
        return len(self._followers)

    def __repr__(self) -> str:
        return (
            f"<Leases keys={len(self._holders)} followers={len(self._followers)} "
            f"invalidations={self.invalidations}>"
        )


class LeaseOwner:
    """The actor methods of an owner of ``Leases`` (mixed into the actor class)."""

    leases: Leases

    async def _invalidate(self, keys: list[str]) -> None:
        """Return once every near-cache holder of ``keys`` has dropped them."""
        waits = self.leases.invalidate(keys)
        if waits:
            await asyncio.gather(*waits)

    async def poll_invalidations(
        self,
        follower: str,
        after: int,
        incarnation: str | None = None,
        timeout_s: float = POLL_TIMEOUT_S,
    ) -> tuple[str, list[tuple[int, str]]]:
        """A near-cache follower's long-poll."""
        return await self.leases.poll(follower, after, incarnation, timeout_s)

    async def forget_follower(self, follower: str) -> None:
        self.leases.forget(follower)

    async def ping(self) -> str:
        return self.leases.incarnation
