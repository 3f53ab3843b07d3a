"""Resource manager (service 11): leased, fenced grants of counted resources.

A ``ResourcePool`` actor owns some pools (the client routes each pool name to
one actor by hashing). A pool is a semaphore of ``capacity`` numbered units,
or a mutex (one unit). A grant is a lease on one unit:

- **TTL**: it ends at an absolute wall-clock deadline, ``expires_at``, unless
  the holder renews it (keepalive) first; it also ends on release, or when its
  owner is declared dead (``release_owner``, e.g. when a session ends).
- **Fencing token**: every grant of a pool gets the pool's next token (1, 2,
  ...). Tokens are journaled with the grant, so they are never handed out
  twice, across restarts too. ``validate`` says whether a token is its unit's
  current, unexpired grant: a holder that paused past its deadline, and any
  store that checks tokens before it writes, learns that the lease is gone
  (Kleppmann's fix for plain lock leases).
- **Fair waiting**: an acquire that cannot be granted now joins the pool's
  FIFO queue until its deadline. A freed unit goes to the head of the queue;
  while anyone waits, a newcomer queues even if a unit is free at that
  instant (no barging).
- **Quotas**: a pool may cap an owner's concurrent grants (held plus
  waiting); over it, an acquire is refused with 429 ``quota_exceeded``.
- **Groups** name several pools; the client acquires from the least-loaded.

Durability: pools, groups, leases, token counters and usage counts are a fold
of the journal (``Durable``); every change carries its wall time (``at``), so
replay is deterministic. Deadlines are absolute wall-clock times, so a
restarted actor expires, right after recovery, every lease whose deadline
passed while it was down, and keeps the others until their own deadline.

Waiters are not durable. A restart forgets the queue: Ray re-sends the
acquire calls that were waiting (the actor is PERMANENT), each with its
idempotency key and its original absolute deadline, so each waiter queues
again (in the order its call comes back, not its old place) and times out
when it would have; one whose grant was committed before the crash gets that
grant back.
"""

from __future__ import annotations

import asyncio
import heapq
import pickle
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from actors.resources.errors import (
    AcquireCancelled,
    AcquireTimedOut,
    GroupNotFound,
    LeaseExpired,
    LeaseNotFound,
    NotLeaseHolder,
    PoolExists,
    PoolNotFound,
    QuotaExceeded,
)
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import InvalidInput, QueueFull
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

#: Pool and group names: letters, digits and . _ : - (they appear in URLs and keys).
NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Most units one pool may have (each is a dict entry while held).
MAX_CAPACITY = 100_000
#: Most pools in one group.
MAX_GROUP_POOLS = 64
#: Ended leases remembered per actor, so a late release or validate can say how it ended.
ENDED_KEPT = 10_000


class PoolKind(str, Enum):
    #: One unit: a named lock.
    MUTEX = "mutex"
    #: ``capacity`` interchangeable units.
    SEMAPHORE = "semaphore"


class LeaseState(str, Enum):
    #: Granted and not yet ended (it may be past its deadline until the next sweep).
    HELD = "held"
    #: Given back by its holder, or by ``release_owner``.
    RELEASED = "released"
    #: Its deadline passed without a renewal.
    EXPIRED = "expired"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    kind: PoolKind
    capacity: int
    #: TTL of a lease that does not ask for one (None: the actor's default).
    ttl_s: float | None = None
    #: Most concurrent grants (held plus waiting) per owner (None: no quota).
    quota_per_owner: int | None = None
    #: Most waiters queued at once (None: the actor's default).
    max_waiters: int | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self) | {"kind": self.kind.value}


@dataclass
class Lease:
    pool: str
    unit: int
    token: int
    owner: str
    granted_at: float  #: wall-clock time of the grant
    expires_at: float  #: absolute wall-clock deadline
    ttl_s: float
    renewals: int = 0
    state: LeaseState = LeaseState.HELD
    ended_at: float | None = None  #: when it was released, or its deadline if it expired

    def public(self) -> dict[str, Any]:
        return asdict(self) | {"state": self.state.value}


@dataclass
class Usage:
    """Counts from the journal (durable), per pool and per owner."""

    grants: int = 0
    releases: int = 0
    expiries: int = 0
    renewals: int = 0
    waited_s: float = 0.0  #: total time granted acquires spent queued
    max_waited_s: float = 0.0

    def count_grant(self, waited_s: float) -> None:
        self.grants += 1
        self.waited_s += waited_s
        self.max_waited_s = max(self.max_waited_s, waited_s)


@dataclass
class _Pool:
    spec: PoolSpec
    created_at: float
    next_token: int = 1
    units: dict[int, Lease] = field(default_factory=dict)  #: unit -> its current lease
    tokens: dict[int, int] = field(default_factory=dict)  #: token -> unit, of held leases
    free: list[int] = field(default_factory=list)  #: free units, a min-heap
    usage: Usage = field(default_factory=Usage)
    owners: dict[str, Usage] = field(default_factory=dict)

    def free_units(self) -> int:
        return self.spec.capacity - len(self.units)

    def held_by(self, owner: str) -> int:
        return sum(1 for lease in self.units.values() if lease.owner == owner)


@dataclass
class _Waiter:
    owner: str
    queued_at: float  #: wall-clock
    turn: asyncio.Future[None]  #: resolved when a unit is promised to this waiter


@dataclass
class _Queue:
    """In-memory (not durable) per-pool wait state."""

    pool: str
    waiters: OrderedDict[str, _Waiter] = field(default_factory=OrderedDict)  #: key -> waiter
    promised: int = 0  #: units handed to waiters that have not yet taken them
    timeouts: int = 0
    refusals: int = 0  #: acquires refused by the quota or a full queue

    def waiting_for(self, owner: str) -> int:
        return sum(1 for w in self.waiters.values() if w.owner == owner)


def check_name(name: Any, what: str = "pool") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"a {what} name is 1-128 of A-Z a-z 0-9 . _ : -", name=str(name)[:200])
    return name


def make_spec(
    name: str,
    kind: str,
    capacity: int | None = None,
    *,
    ttl_s: float | None = None,
    quota_per_owner: int | None = None,
    max_waiters: int | None = None,
    max_ttl_s: float = float("inf"),
) -> PoolSpec:
    """Check a pool definition and make it a ``PoolSpec`` (InvalidInput if it is not valid)."""
    check_name(name)
    try:
        pool_kind = PoolKind(kind)
    except ValueError:
        raise InvalidInput("kind is 'mutex' or 'semaphore'", kind=str(kind)[:50]) from None
    if pool_kind is PoolKind.MUTEX:
        if capacity not in (None, 1):
            raise InvalidInput("a mutex has capacity 1", capacity=capacity)
        capacity = 1
    if not _is_int(capacity) or not 1 <= capacity <= MAX_CAPACITY:  # type: ignore[operator]
        raise InvalidInput(f"capacity is an integer 1-{MAX_CAPACITY}", capacity=capacity)
    if ttl_s is not None:
        check_ttl(ttl_s, max_ttl_s)
    if quota_per_owner is not None and (not _is_int(quota_per_owner) or quota_per_owner < 1):
        raise InvalidInput("quota_per_owner is an integer >= 1", quota_per_owner=quota_per_owner)
    if max_waiters is not None and (not _is_int(max_waiters) or max_waiters < 0):
        raise InvalidInput("max_waiters is an integer >= 0", max_waiters=max_waiters)
    return PoolSpec(
        name,
        pool_kind,
        int(capacity),  # type: ignore[arg-type]
        ttl_s=None if ttl_s is None else float(ttl_s),
        quota_per_owner=quota_per_owner,
        max_waiters=max_waiters,
    )


def check_ttl(ttl_s: Any, max_ttl_s: float) -> float:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s <= max_ttl_s:
        raise InvalidInput(f"ttl_s is a number > 0 and <= {max_ttl_s:g}", ttl_s=ttl_s)
    return float(ttl_s)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pick_least_loaded(loads: list[dict[str, Any]]) -> str:
    """The pool to acquire from: lowest (held + waiting) / capacity, then fewest
    waiting, then the group's order. ``loads`` are ``ResourcePool.loads`` entries."""
    if not loads:
        raise InvalidInput("the group has no pools")
    best = min(
        enumerate(loads),
        key=lambda item: (
            (item[1]["held"] + item[1]["waiting"]) / item[1]["capacity"],
            item[1]["waiting"],
            item[0],
        ),
    )
    return str(best[1]["name"])


class ResourcePool(Durable):
    """Pools of leased units with fencing tokens, fair queues and quotas."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        default_ttl_s: float = 30.0,
        max_ttl_s: float = 3_600.0,
        max_wait_s: float = 300.0,
        max_waiters: int = 10_000,
    ) -> None:
        self.clock = clock or SystemClock()
        self.default_ttl_s = default_ttl_s
        self.max_ttl_s = max_ttl_s
        self.max_wait_s = max_wait_s
        self.max_waiters = max_waiters
        self.pools: dict[str, _Pool] = {}
        self.groups: dict[str, list[str]] = {}
        #: Ended leases, newest last: (pool, token) -> lease.
        self.ended: OrderedDict[tuple[str, int], Lease] = OrderedDict()
        #: (expires_at, pool, token) of held leases; entries of renewed or ended leases are stale.
        self._deadlines: list[tuple[float, str, int]] = []
        self._queues: dict[str, _Queue] = {}
        #: acquire calls in progress by idempotency key (a repeated call joins the first).
        self._acquiring: dict[str, asyncio.Future[dict[str, Any]]] = {}

    # --- state changes (deterministic; replayed on recovery) -----------------

    def apply_create_pool(self, spec: dict[str, Any], at: float) -> dict[str, Any]:
        pool_spec = PoolSpec(**spec | {"kind": PoolKind(spec["kind"])})
        existing = self.pools.get(pool_spec.name)
        if existing is not None:
            if existing.spec != pool_spec:
                raise PoolExists(
                    "a pool of that name exists with another definition",
                    pool=pool_spec.name,
                    existing=existing.spec.public(),
                )
            return existing.spec.public()
        self.pools[pool_spec.name] = _Pool(
            pool_spec, created_at=at, free=list(range(pool_spec.capacity))
        )
        return pool_spec.public()

    def apply_create_group(self, name: str, pools: list[str]) -> dict[str, Any]:
        existing = self.groups.get(name)
        if existing is not None and existing != pools:
            raise PoolExists("a group of that name exists with other pools", group=name)
        self.groups[name] = list(pools)
        return {"name": name, "pools": list(pools)}

    def apply_grant(
        self, pool: str, owner: str, ttl_s: float, at: float, waited_s: float
    ) -> dict[str, Any]:
        state = self._pool(pool)
        if state.free_units() < 1:  # the caller checked; replay never gets here
            raise AcquireTimedOut("no free unit", pool=pool)
        unit = heapq.heappop(state.free)  # the lowest free unit
        lease = Lease(pool, unit, state.next_token, owner, at, at + ttl_s, ttl_s)
        state.next_token += 1
        state.units[unit] = lease
        state.tokens[lease.token] = unit
        state.usage.count_grant(waited_s)
        state.owners.setdefault(owner, Usage()).count_grant(waited_s)
        heapq.heappush(self._deadlines, (lease.expires_at, pool, lease.token))
        return lease.public()

    def apply_renew(
        self, pool: str, token: int, owner: str | None, ttl_s: float, at: float
    ) -> dict[str, Any]:
        lease = self._held(pool, token, owner)
        if lease.expires_at <= at:
            raise LeaseExpired("the lease expired before the renewal", pool=pool, token=token)
        lease.expires_at = at + ttl_s
        lease.ttl_s = ttl_s
        lease.renewals += 1
        state = self.pools[pool]
        state.usage.renewals += 1
        state.owners.setdefault(lease.owner, Usage()).renewals += 1
        heapq.heappush(self._deadlines, (lease.expires_at, pool, token))
        return lease.public()

    def apply_release(
        self, pool: str, tokens: list[int], owner: str | None, at: float
    ) -> list[dict[str, Any]]:
        leases = [self._held(pool, token, owner) for token in tokens]  # all checked first
        for lease in leases:
            self._end(lease, LeaseState.RELEASED, at)
        return [lease.public() for lease in leases]

    def apply_expire(self, at: float) -> list[dict[str, Any]]:
        expired = []
        while self._deadlines and self._deadlines[0][0] <= at:
            deadline, pool, token = heapq.heappop(self._deadlines)
            lease = self._current(pool, token)
            if lease is not None and lease.expires_at == deadline:
                self._end(lease, LeaseState.EXPIRED, lease.expires_at)
                expired.append(lease.public())
        return expired

    def snapshot_state(self) -> dict[str, Any]:
        return {"pools": self.pools, "groups": self.groups, "ended": self.ended}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.pools = state["pools"]
        self.groups = state["groups"]
        self.ended = state["ended"]
        self._deadlines = [
            (lease.expires_at, name, lease.token)
            for name, pool in self.pools.items()
            for lease in pool.units.values()
        ]
        heapq.heapify(self._deadlines)

    def _pool(self, name: str) -> _Pool:
        state = self.pools.get(name)
        if state is None:
            raise PoolNotFound(pool=name)
        return state

    def _current(self, pool: str, token: int) -> Lease | None:
        state = self.pools.get(pool)
        if state is None:
            return None
        unit = state.tokens.get(token)
        return None if unit is None else state.units[unit]

    def _held(self, pool: str, token: int, owner: str | None) -> Lease:
        state = self._pool(pool)
        lease = self._current(pool, token)
        if lease is None:
            if (pool, token) in self.ended or (_is_int(token) and 0 < token < state.next_token):
                raise LeaseExpired(pool=pool, token=token)
            raise LeaseNotFound(pool=pool, token=token)
        if owner is not None and lease.owner != owner:
            raise NotLeaseHolder(pool=pool, token=token)
        return lease

    def _end(self, lease: Lease, how: LeaseState, at: float) -> None:
        state = self.pools[lease.pool]
        del state.units[lease.unit]
        del state.tokens[lease.token]
        heapq.heappush(state.free, lease.unit)
        lease.state, lease.ended_at = how, at
        usage = state.owners.setdefault(lease.owner, Usage())
        if how is LeaseState.RELEASED:
            state.usage.releases += 1
            usage.releases += 1
        else:
            state.usage.expiries += 1
            usage.expiries += 1
        self.ended[(lease.pool, lease.token)] = lease
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)

    # --- pools and groups ----------------------------------------------------

    async def create_pool(
        self,
        name: str,
        kind: str,
        capacity: int | None = None,
        *,
        ttl_s: float | None = None,
        quota_per_owner: int | None = None,
        max_waiters: int | None = None,
    ) -> dict[str, Any]:
        """Create a pool (the same definition again is a no-op; another is 409)."""
        pool_spec = make_spec(
            name, kind, capacity, ttl_s=ttl_s, quota_per_owner=quota_per_owner,
            max_waiters=max_waiters, max_ttl_s=self.max_ttl_s,
        )  # fmt: skip
        existing = self.pools.get(pool_spec.name)
        if existing is not None and existing.spec == pool_spec:
            return self.describe(pool_spec.name)
        await self.execute("create_pool", spec=asdict(pool_spec), at=self.clock.time())
        return self.describe(pool_spec.name)

    def describe(self, pool: str) -> dict[str, Any]:
        state = self._pool(pool)
        queue = self._queues.get(pool)
        return state.spec.public() | {
            "held": len(state.units),
            "waiting": len(queue.waiters) if queue else 0,
            "next_token": state.next_token,
            "created_at": state.created_at,
        }

    def loads(self, pools: list[str]) -> list[dict[str, Any]]:
        """Capacity, held and waiting of each pool, for choosing among a group."""
        return [
            {key: d[key] for key in ("name", "capacity", "held", "waiting")}
            for d in map(self.describe, pools)
        ]

    async def create_group(self, name: str, pools: list[str]) -> dict[str, Any]:
        """Name a list of pools (which the caller checked exist; they may live elsewhere)."""
        check_name(name, "group")
        if not isinstance(pools, list) or not 1 <= len(pools) <= MAX_GROUP_POOLS:
            raise InvalidInput(f"a group has 1-{MAX_GROUP_POOLS} pools")
        for pool in pools:
            check_name(pool)
        if len(set(pools)) != len(pools):
            raise InvalidInput("a group names each pool once", pools=pools)
        if self.groups.get(name) == pools:
            return {"name": name, "pools": list(pools)}
        result: dict[str, Any] = await self.execute("create_group", name=name, pools=pools)
        return result

    def group(self, name: str) -> dict[str, Any]:
        if name not in self.groups:
            raise GroupNotFound(group=name)
        return {"name": name, "pools": list(self.groups[name])}

    # --- leases --------------------------------------------------------------

    async def acquire(
        self,
        pool: str,
        owner: str,
        *,
        key: str,
        ttl_s: float | None = None,
        wait_until: float | None = None,
    ) -> dict[str, Any]:
        """Grant a unit of ``pool`` to ``owner``: now, or after queueing until the
        wall-clock time ``wait_until`` (None: do not wait). ``key`` makes the call
        idempotent: a repeat (Ray retrying it after a restart) gets the same grant."""
        if key in self._replies:
            return dict(self._replies[key])
        if key in self._acquiring:
            return dict(await asyncio.shield(self._acquiring[key]))
        state = self._pool(pool)
        if not isinstance(owner, str) or not owner:
            raise InvalidInput("owner is a non-empty string")
        ttl = check_ttl(
            ttl_s if ttl_s is not None else state.spec.ttl_s or self.default_ttl_s, self.max_ttl_s
        )
        now = self.clock.time()
        # (a second of slack: the deadline was set on the caller's clock)
        if wait_until is not None and wait_until - now > self.max_wait_s + 1.0:
            raise InvalidInput(f"an acquire waits at most {self.max_wait_s:g} s")
        result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acquiring[key] = result
        try:
            lease = await self._acquire(state, owner, key, ttl, now, wait_until)
            result.set_result(lease)
            return lease
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                result.cancel()
            else:
                result.set_exception(error)
                result.exception()  # retrieved: a repeat that never came is not an error
            raise
        finally:
            del self._acquiring[key]

    async def _acquire(
        self,
        state: _Pool,
        owner: str,
        key: str,
        ttl: float,
        queued_at: float,
        wait_until: float | None,
    ) -> dict[str, Any]:
        self.expire_due()
        pool = state.spec.name
        queue = self._queues.setdefault(pool, _Queue(pool))
        quota = state.spec.quota_per_owner
        if quota is not None:
            held, waiting = state.held_by(owner), queue.waiting_for(owner)
            if held + waiting >= quota:
                queue.refusals += 1
                raise QuotaExceeded(
                    f"owner {owner!r} is at its quota of {quota} for pool {pool!r}",
                    pool=pool, owner=owner, quota=quota, held=held, waiting=waiting,
                    retry_after_s=self._soonest_end(state, owner),
                )  # fmt: skip
        # No barging: only with nobody queued may a newcomer take a free unit.
        if not queue.waiters and state.free_units() - queue.promised > 0:
            return await self._grant(pool, owner, key, ttl, waited_s=0.0)
        if wait_until is None or wait_until <= queued_at:
            raise AcquireTimedOut("no unit is free and the acquire does not wait", pool=pool)
        limit = state.spec.max_waiters if state.spec.max_waiters is not None else self.max_waiters
        if len(queue.waiters) >= limit:
            queue.refusals += 1
            raise QueueFull(pool=pool, max_waiters=limit)
        waiter = _Waiter(owner, queued_at, asyncio.get_running_loop().create_future())
        queue.waiters[key] = waiter
        await self._wait_turn(queue, key, waiter, wait_until)
        queue.promised -= 1  # taken now: the grant below applies before anything else runs
        try:
            return await self._grant(
                pool, owner, key, ttl, waited_s=max(0.0, self.clock.time() - queued_at)
            )
        finally:
            self._dispatch(pool)

    async def _wait_turn(self, queue: _Queue, key: str, waiter: _Waiter, wait_until: float) -> None:
        timer = asyncio.ensure_future(self.clock.sleep(wait_until - self.clock.time()))
        try:
            await asyncio.wait({waiter.turn, timer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: give the place, or the promised unit, back
            timer.cancel()
            turn = waiter.turn
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                queue.promised -= 1
                self._dispatch(queue.pool)
            else:
                queue.waiters.pop(key, None)
            raise
        timer.cancel()
        if waiter.turn.done():
            if waiter.turn.cancelled() or waiter.turn.exception() is not None:
                queue.waiters.pop(key, None)
                raise AcquireCancelled(key=key)
            return
        queue.waiters.pop(key, None)
        queue.timeouts += 1
        raise AcquireTimedOut("no unit was granted before the wait ran out")

    async def _grant(
        self, pool: str, owner: str, key: str, ttl: float, *, waited_s: float
    ) -> dict[str, Any]:
        lease: dict[str, Any] = await self.execute(
            "grant", key=key, pool=pool, owner=owner, ttl_s=ttl, at=self.clock.time(),
            waited_s=waited_s,
        )  # fmt: skip
        return dict(lease)

    def _dispatch(self, pool: str) -> None:
        """Promise free units to the head of the queue, in order."""
        state, queue = self.pools.get(pool), self._queues.get(pool)
        if state is None or queue is None:
            return
        while queue.waiters and state.free_units() - queue.promised > 0:
            _, waiter = queue.waiters.popitem(last=False)
            queue.promised += 1
            waiter.turn.set_result(None)

    def _soonest_end(self, state: _Pool, owner: str) -> float:
        now = self.clock.time()
        ends = [lease.expires_at - now for lease in state.units.values() if lease.owner == owner]
        return round(max(0.0, min(ends)), 3) if ends else 0.0

    async def cancel(self, pool: str, key: str) -> bool:
        """Withdraw the acquire with ``key``: leave the queue, or give back what it
        was granted (a waiter whose client went away). True if something changed."""
        queue = self._queues.get(pool)
        waiter = queue.waiters.pop(key, None) if queue else None
        if waiter is not None:
            waiter.turn.set_exception(AcquireCancelled(key=key))
            return True
        granted = self._replies.get(key)
        if granted is None and key in self._acquiring:
            try:  # promised a unit, taking it now: wait for the grant, then give it back
                granted = await asyncio.shield(self._acquiring[key])
            except Exception:
                return False
        if isinstance(granted, dict) and self._current(pool, granted["token"]) is not None:
            await self.release(pool, [granted["token"]])
            return True
        return False

    async def renew(
        self, pool: str, token: int, *, owner: str | None, ttl_s: float | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Push the lease's deadline to now + ttl_s (its current TTL if None)."""
        self.expire_due()
        lease = self._held(pool, token, owner)
        ttl = check_ttl(ttl_s if ttl_s is not None else lease.ttl_s, self.max_ttl_s)
        renewed: dict[str, Any] = await self.execute(
            "renew", key=key, pool=pool, token=token, owner=owner, ttl_s=ttl, at=self.clock.time()
        )
        return renewed

    async def release(
        self, pool: str, tokens: list[int], *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """End leases now. A lease that already ended answers how it ended (no change),
        so a release is safe to repeat."""
        self.expire_due()
        answers: dict[int, dict[str, Any]] = {}
        live = []
        for token in tokens:
            ended = self.ended.get((pool, token))
            if ended is not None:
                if owner is not None and ended.owner != owner:
                    raise NotLeaseHolder(pool=pool, token=token)
                answers[token] = ended.public()
            else:
                self._held(pool, token, owner)  # raises if unknown or someone else's
                live.append(token)
        if live:
            # Hand the units on before the commit: the grants are journaled after
            # this release, so the next holder's grant is never acknowledged first.
            released, committed = self._apply_now(
                "release", pool=pool, tokens=live, owner=owner, at=self.clock.time()
            )
            self._dispatch(pool)
            await committed
            answers.update({lease["token"]: lease for lease in released})
        return [answers[token] for token in tokens]

    async def release_owner(self, owner: str) -> int:
        """The owner is gone (its session ended): end its leases and its waits here."""
        released = 0
        for pool, state in list(self.pools.items()):
            queue = self._queues.get(pool)
            for key, waiter in list(queue.waiters.items()) if queue else []:
                if waiter.owner == owner:
                    await self.cancel(pool, key)
            tokens = [lease.token for lease in state.units.values() if lease.owner == owner]
            if tokens:
                released += len(await self.release(pool, tokens))
        return released

    def expire_due(self) -> list[dict[str, Any]]:
        """End every lease whose deadline has passed, and wake waiters for their units.

        Applied and journaled at once, without waiting for the commit: whatever
        is granted next is journaled after it, and acknowledged only once its own
        record (hence this one) is committed."""
        now = self.clock.time()
        if not self._deadlines or self._deadlines[0][0] > now:
            return []
        expired, committed = self._apply_now("expire", at=now)
        committed.add_done_callback(lambda f: f.cancelled() or f.exception())
        for pool in {lease["pool"] for lease in expired}:
            self._dispatch(pool)
        return expired

    def _apply_now(self, op: str, **args: Any) -> tuple[Any, asyncio.Future[int]]:
        """``execute`` split in two: apply and append now; the future resolves at commit.
        (Records commit in order, so whatever is appended after it commits after it.)"""
        result = self._apply(op, args, None)
        _, committed = self.journal.append(pickle.dumps((op, args, None), protocol=5))
        return result, committed

    def validate(self, pool: str, tokens: list[int]) -> list[dict[str, Any]]:
        """For each token: is it its unit's current grant, before its deadline? All
        answered at one instant, so at most one token per unit can be valid."""
        state = self._pool(pool)
        now = self.clock.time()
        answers = []
        for token in tokens:
            lease = self._current(pool, token)
            answer: dict[str, Any] = {"pool": pool, "token": token, "valid": False}
            if lease is not None and lease.expires_at > now:
                answer |= {"valid": True, "reason": "held", "unit": lease.unit,
                           "owner": lease.owner, "expires_at": lease.expires_at}  # fmt: skip
            elif lease is not None:
                answer |= {"reason": "expired", "unit": lease.unit}
            elif (pool, token) in self.ended:
                ended = self.ended[(pool, token)]
                answer |= {"reason": ended.state.value, "unit": ended.unit}
            elif _is_int(token) and 0 < token < state.next_token:
                answer |= {"reason": "ended"}
            else:
                answer |= {"reason": "unknown"}
            if "unit" in answer:
                current = state.units.get(answer["unit"])
                valid = current is not None and current.expires_at > now
                answer["current_token"] = current.token if valid else None  # type: ignore[union-attr]
            answers.append(answer)
        return answers

    def leases(self, pool: str, owner: str | None = None) -> list[dict[str, Any]]:
        state = self._pool(pool)
        return [
            lease.public()
            for _, lease in sorted(state.units.items())
            if owner is None or lease.owner == owner
        ]

    def stats(self, pool: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        """Usage per pool (and per owner within it) of the pools here."""
        names = [pool] if pool is not None else sorted(self.pools)
        answers = []
        for name in names:
            state = self._pool(name)
            queue = self._queues.get(name, _Queue(name))
            owners = {}
            for who, usage in sorted(state.owners.items()):
                if owner is None or who == owner:
                    owners[who] = asdict(usage) | {
                        "held": state.held_by(who),
                        "waiting": queue.waiting_for(who),
                    }
            answers.append(
                self.describe(name)
                | asdict(state.usage)
                | {"timeouts": queue.timeouts, "refusals": queue.refusals, "owners": owners}
            )
        return answers

    def __repr__(self) -> str:
        held = sum(len(p.units) for p in self.pools.values())
        waiting = sum(len(q.waiters) for q in self._queues.values())
        return f"<ResourcePool pools={len(self.pools)} held={held} waiting={waiting}>"


# --- the actor --------------------------------------------------------------


def shard_name(index: int) -> str:
    return f"resources-{index}"


class _ResourcePoolProcess(ResourcePool):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(
            default_ttl_s=settings.resources_default_ttl_s,
            max_ttl_s=settings.resources_max_ttl_s,
            max_wait_s=settings.resources_max_wait_s,
            max_waiters=settings.resources_max_waiters,
        )
        self.restarts = await recover(self, settings, name)
        self.expire_due()  # leases whose deadline passed while this actor was down
        self._sweeper = every(self.clock, settings.resources_sweep_interval_s, self.expire_due)

    async def ping(self) -> int:
        return len(self.pools)

    async def info(self) -> dict[str, Any]:
        import ray

        return {"restarts": self.restarts, "node_id": ray.get_runtime_context().get_node_id()}


#: Durable leases; a call in flight at a crash is retried on the restarted actor
#: (acquire and renew carry idempotency keys; a release is safe to repeat).
#: Waiters are calls in progress, hence the high concurrency.
ResourcePoolActor = remote_actor(
    _ResourcePoolProcess,
    restart=Restart.PERMANENT,
    scheduling_strategy="SPREAD",
    max_concurrency=20_000,
)
