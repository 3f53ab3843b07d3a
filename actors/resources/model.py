"""The resource manager's model: pools of leased units, and checks on what comes in.

- ``PoolSpec`` (a pool's definition), ``Lease`` (one grant of one unit),
  ``Usage`` (durable counts, per pool and per owner) and ``PoolState`` (one
  pool: its units, fencing tokens, free units and counts).
- ``PoolBook``: one actor's pools, groups and recently ended leases, a
  deterministic fold of its journal. ``ResourcePool``'s ``apply_<op>``
  methods are its changes; ``BookSnapshot`` is what a snapshot stores.
- ``Waiter`` and ``WaitQueue``: a pool's FIFO of acquires waiting for a unit,
  in memory only (a restart forgets them; ``pool.py`` says how calls come back).
- Input checks shared by the actor and the client (``check_name``,
  ``make_spec``, ``check_ttl``), and ``pick_least_loaded`` for group acquires.
- Owners' namespaces: a pool (or group) ``name`` of owner ``tenant`` is kept
  under the id ``<tenant>/<name>`` (``pool_id``); names cannot hold ``/``, so
  no owner's id can equal another's. Ids without an owner belong to the
  deployment's own callers (other services, tests); no HTTP route reaches them.
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from actors.resources.errors import (
    AcquireTimedOut,
    GroupNotFound,
    LeaseExpired,
    LeaseNotFound,
    NotLeaseHolder,
    PoolBusy,
    PoolExists,
    PoolNotFound,
)
from actors.runtime.errors import InvalidInput

#: Pool and group names: letters, digits and . _ : - (they appear in URLs and keys).
NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: A pool's or group's id: its name, after its owner's id and ``/`` when it has one.
ID = re.compile(r"^(?:[A-Za-z0-9._:-]{1,128}/)?[A-Za-z0-9._:-]{1,128}$")
#: Between an owner's id and a name, in an id.
SEPARATOR = "/"
#: Most units one pool may have (each is a dict entry while held).
MAX_CAPACITY = 100_000
#: Most pools in one group.
MAX_GROUP_POOLS = 64
#: Longest queue any pool may ask for (the deployment's ``max_waiters`` may set less).
MAX_WAITERS = 1_000_000
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


@dataclass(frozen=True, slots=True)
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


@dataclass(slots=True)
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


@dataclass(slots=True)
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

    def count_end(self, how: LeaseState) -> None:
        if how is LeaseState.RELEASED:
            self.releases += 1
        else:
            self.expiries += 1


@dataclass(slots=True)
class PoolState:
    """One pool: its definition, the lease on each held unit, and its counts."""

    spec: PoolSpec
    created_at: float
    next_token: int = 1
    units: dict[int, Lease] = field(default_factory=dict)  #: unit -> its current lease
    tokens: dict[int, int] = field(default_factory=dict)  #: token -> unit, of held leases
    free: list[int] = field(default_factory=list)  #: free units, a min-heap
    usage: Usage = field(default_factory=Usage)
    owners: dict[str, Usage] = field(default_factory=dict)

    @classmethod
    def new(cls, spec: PoolSpec, at: float, first_token: int = 1) -> PoolState:
        """A pool with every unit free, whose first grant takes ``first_token`` (above
        every token an earlier pool of the same owner handed out, once one was deleted)."""
        return cls(spec, created_at=at, next_token=first_token, free=list(range(spec.capacity)))

    def free_units(self) -> int:
        return self.spec.capacity - len(self.units)

    def held_by(self, owner: str) -> int:
        return sum(1 for lease in self.units.values() if lease.owner == owner)

    def current(self, token: int) -> Lease | None:
        """The held lease with fencing token ``token``, if any."""
        unit = self.tokens.get(token)
        return None if unit is None else self.units[unit]

    def owner_usage(self, owner: str) -> Usage:
        return self.owners.setdefault(owner, Usage())

    def grant(self, owner: str, ttl_s: float, at: float, waited_s: float) -> Lease:
        """The lowest free unit to ``owner``, with the pool's next fencing token."""
        unit = heapq.heappop(self.free)
        lease = Lease(self.spec.name, unit, self.next_token, owner, at, at + ttl_s, ttl_s)
        self.next_token += 1
        self.units[unit] = lease
        self.tokens[lease.token] = unit
        self.usage.count_grant(waited_s)
        self.owner_usage(owner).count_grant(waited_s)
        return lease

    def renew(self, lease: Lease, ttl_s: float, at: float) -> None:
        lease.expires_at = at + ttl_s
        lease.ttl_s = ttl_s
        lease.renewals += 1
        self.usage.renewals += 1
        self.owner_usage(lease.owner).renewals += 1

    def end(self, lease: Lease, how: LeaseState, at: float) -> None:
        del self.units[lease.unit]
        del self.tokens[lease.token]
        heapq.heappush(self.free, lease.unit)
        lease.state, lease.ended_at = how, at
        self.usage.count_end(how)
        self.owner_usage(lease.owner).count_end(how)

    def soonest_end(self, owner: str, now: float) -> float:
        """Seconds until the first of ``owner``'s leases here ends (0 if it holds none)."""
        ends = [lease.expires_at - now for lease in self.units.values() if lease.owner == owner]
        return round(max(0.0, min(ends)), 3) if ends else 0.0

    def describe(self, waiting: int) -> dict[str, Any]:
        return self.spec.public() | {
            "held": len(self.units),
            "waiting": waiting,
            "next_token": self.next_token,
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class BookSnapshot:
    """A ``PoolBook`` as stored. The ended leases are a list, oldest first: their
    keys, ``(pool, token)``, are in each lease and cannot be MessagePack keys."""

    pools: dict[str, PoolState]
    groups: dict[str, list[str]]
    ended: list[Lease]
    #: Per owner ("" for ids without one): the token a new pool starts from.
    floors: dict[str, int] = field(default_factory=dict)


class PoolBook:
    """One actor's pools, groups and recently ended leases.

    Every change is deterministic (its time is an argument), so replaying the
    journal through it rebuilds the same book. A change checks everything
    before it changes anything, and raises a ``RealmError`` to refuse."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolState] = {}
        self.groups: dict[str, list[str]] = {}
        #: Ended leases, newest last: (pool, token) -> lease.
        self.ended: OrderedDict[tuple[str, int], Lease] = OrderedDict()
        #: (expires_at, pool, token) of held leases; entries of renewed or ended leases are stale.
        self._deadlines: list[tuple[float, str, int]] = []
        #: Per owner ("" for ids without one): the first token of its next new pool.
        #: Raised past a pool's tokens when it is deleted, so a pool made again
        #: under the same name never hands out a token its predecessor did.
        self.floors: dict[str, int] = {}
        #: Pools and groups per owner (ids with an owner only), for their quotas.
        self.pool_counts: dict[str, int] = {}
        self.group_counts: dict[str, int] = {}

    # --- changes -------------------------------------------------------------

    def create_pool(self, spec: PoolSpec, at: float) -> dict[str, Any]:
        existing = self.pools.get(spec.name)
        if existing is not None:
            if existing.spec != spec:
                raise PoolExists(
                    "a pool of that name exists with another definition",
                    pool=local_name(spec.name),
                    existing=existing.spec.public() | {"name": local_name(spec.name)},
                )
            return existing.spec.public()
        tenant = tenant_of(spec.name)
        self.pools[spec.name] = PoolState.new(spec, at, self.floors.get(tenant or "", 1))
        if tenant is not None:
            self.pool_counts[tenant] = self.pool_counts.get(tenant, 0) + 1
        return spec.public()

    def delete_pool(self, pool: str) -> dict[str, Any]:
        """Forget an idle pool (``PoolBusy`` while any unit is held), and take it
        out of this book's groups (a group left empty goes too)."""
        state = self.pool(pool)
        if state.units:
            raise PoolBusy(pool=local_name(pool), held=len(state.units))
        tenant = tenant_of(pool)
        key = tenant or ""
        self.floors[key] = max(self.floors.get(key, 1), state.next_token)
        del self.pools[pool]
        if tenant is not None:
            _count_down(self.pool_counts, tenant)
        for group, members in list(self.groups.items()):
            if pool in members:
                members.remove(pool)
                if not members:
                    self.delete_group(group)
        return state.describe(0)

    def create_group(self, name: str, pools: list[str]) -> dict[str, Any]:
        existing = self.groups.get(name)
        if existing is not None and existing != pools:
            raise PoolExists("a group of that name exists with other pools", group=local_name(name))
        if existing is None and (tenant := tenant_of(name)) is not None:
            self.group_counts[tenant] = self.group_counts.get(tenant, 0) + 1
        self.groups[name] = list(pools)
        return {"name": name, "pools": list(pools)}

    def delete_group(self, name: str) -> dict[str, Any]:
        found = self.group(name)
        del self.groups[name]
        if (tenant := tenant_of(name)) is not None:
            _count_down(self.group_counts, tenant)
        return found

    def grant(self, pool: str, owner: str, ttl_s: float, at: float, waited_s: float) -> Lease:
        state = self.pool(pool)
        if state.free_units() < 1:  # the caller checked; replay never gets here
            raise AcquireTimedOut("no free unit", pool=local_name(pool))
        lease = state.grant(owner, ttl_s, at, waited_s)
        heapq.heappush(self._deadlines, (lease.expires_at, pool, lease.token))
        return lease

    def renew(self, pool: str, token: int, owner: str | None, ttl_s: float, at: float) -> Lease:
        lease = self.held(pool, token, owner)
        if lease.expires_at <= at:
            raise LeaseExpired(
                "the lease expired before the renewal", pool=local_name(pool), token=token
            )
        self.pools[pool].renew(lease, ttl_s, at)
        heapq.heappush(self._deadlines, (lease.expires_at, pool, token))
        return lease

    def release(self, pool: str, tokens: list[int], owner: str | None, at: float) -> list[Lease]:
        leases = [self.held(pool, token, owner) for token in tokens]  # all checked first
        for lease in leases:
            self._end(lease, LeaseState.RELEASED, at)
        return leases

    def expire(self, at: float) -> list[Lease]:
        """End every held lease whose deadline is at or before ``at``."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= at:
            deadline, pool, token = heapq.heappop(self._deadlines)
            lease = self.current(pool, token)
            if lease is not None and lease.expires_at == deadline:
                self._end(lease, LeaseState.EXPIRED, lease.expires_at)
                expired.append(lease)
        return expired

    def _end(self, lease: Lease, how: LeaseState, at: float) -> None:
        self.pools[lease.pool].end(lease, how, at)
        self.ended[(lease.pool, lease.token)] = lease
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)

    # --- reads ---------------------------------------------------------------

    def pool(self, name: str) -> PoolState:
        state = self.pools.get(name)
        if state is None:
            raise PoolNotFound(pool=local_name(name))
        return state

    def group(self, name: str) -> dict[str, Any]:
        if name not in self.groups:
            raise GroupNotFound(group=local_name(name))
        return {"name": name, "pools": list(self.groups[name])}

    def owned_by(self, tenant: str | None) -> list[str]:
        """The ids of ``tenant``'s pools (every pool's for None), sorted."""
        if tenant is None:
            return sorted(self.pools)
        prefix = tenant + SEPARATOR
        return sorted(name for name in self.pools if name.startswith(prefix))

    def current(self, pool: str, token: int) -> Lease | None:
        state = self.pools.get(pool)
        return None if state is None else state.current(token)

    def held(self, pool: str, token: int, owner: str | None) -> Lease:
        """The held lease ``token`` of ``pool``, checked to be ``owner``'s (None: anyone's)."""
        state = self.pool(pool)
        lease = state.current(token)
        if lease is None:
            if (pool, token) in self.ended or (is_int(token) and 0 < token < state.next_token):
                raise LeaseExpired(pool=local_name(pool), token=token)
            raise LeaseNotFound(pool=local_name(pool), token=token)
        if owner is not None and lease.owner != owner:
            raise NotLeaseHolder(pool=local_name(pool), token=token)
        return lease

    def due(self, now: float) -> bool:
        """Whether some lease's deadline may have passed by ``now``."""
        return bool(self._deadlines) and self._deadlines[0][0] <= now

    def validate(self, pool: str, tokens: list[int], now: float) -> list[dict[str, Any]]:
        """For each token: is it its unit's current grant, before its deadline? All
        answered at one instant, so at most one token per unit can be valid."""
        state = self.pool(pool)
        answers = []
        for token in tokens:
            lease = state.current(token)
            answer: dict[str, Any] = {"pool": pool, "token": token, "valid": False}
            if lease is not None and lease.expires_at > now:
                answer |= {"valid": True, "reason": "held", "unit": lease.unit,
                           "owner": lease.owner, "expires_at": lease.expires_at}  # fmt: skip
            elif lease is not None:
                answer |= {"reason": "expired", "unit": lease.unit}
            elif (ended := self.ended.get((pool, token))) is not None:
                answer |= {"reason": ended.state.value, "unit": ended.unit}
            elif is_int(token) and 0 < token < state.next_token:
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
        return [
            lease.public()
            for _, lease in sorted(self.pool(pool).units.items())
            if owner is None or lease.owner == owner
        ]

    def size(self) -> int:
        """About how many items a snapshot holds (O(1): deadlines stand for held leases)."""
        return len(self.pools) + len(self.ended) + len(self._deadlines)

    # --- snapshots -----------------------------------------------------------

    def snapshot(self) -> BookSnapshot:
        return BookSnapshot(self.pools, self.groups, list(self.ended.values()), self.floors)

    @classmethod
    def restored(cls, snapshot: BookSnapshot) -> PoolBook:
        book = cls()
        book.pools, book.groups = snapshot.pools, snapshot.groups
        book.floors = snapshot.floors
        for counts, names in ((book.pool_counts, book.pools), (book.group_counts, book.groups)):
            for name in names:
                if (tenant := tenant_of(name)) is not None:
                    counts[tenant] = counts.get(tenant, 0) + 1
        book.ended = OrderedDict(((lease.pool, lease.token), lease) for lease in snapshot.ended)
        book._deadlines = [
            (lease.expires_at, name, lease.token)
            for name, pool in book.pools.items()
            for lease in pool.units.values()
        ]
        heapq.heapify(book._deadlines)
        return book

    def __repr__(self) -> str:
        held = sum(len(p.units) for p in self.pools.values())
        return f"<PoolBook pools={len(self.pools)} held={held} ended={len(self.ended)}>"


# --- the wait queue (not durable) ---------------------------------------------


@dataclass(slots=True)
class Waiter:
    owner: str
    queued_at: float  #: wall-clock
    turn: asyncio.Future[None]  #: resolved when a unit is promised to this waiter


@dataclass(slots=True)
class WaitQueue:
    """A pool's acquires waiting for a unit, first come first served (in memory only)."""

    pool: str
    waiters: OrderedDict[str, Waiter] = field(default_factory=OrderedDict)  #: key -> waiter
    promised: int = 0  #: units handed to waiters that have not yet taken them
    timeouts: int = 0
    refusals: int = 0  #: acquires refused by the quota or a full queue

    def waiting_for(self, owner: str) -> int:
        return sum(1 for w in self.waiters.values() if w.owner == owner)


# --- input ----------------------------------------------------------------------


def _count_down(counts: dict[str, int], tenant: str) -> None:
    left = counts.get(tenant, 0) - 1
    if left > 0:
        counts[tenant] = left
    else:
        counts.pop(tenant, None)


def check_name(name: Any, what: str = "pool") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"a {what} name is 1-128 of A-Z a-z 0-9 . _ : -", name=str(name)[:200])
    return name


def check_id(pool: Any, what: str = "pool") -> str:
    """A pool's (or group's) id: its name, with its owner's id and ``/`` before it."""
    if not isinstance(pool, str) or not ID.match(pool):
        raise InvalidInput(f"a {what} name is 1-128 of A-Z a-z 0-9 . _ : -", name=str(pool)[:200])
    return pool


def pool_id(name: Any, tenant: str | None, what: str = "pool") -> str:
    """The id of owner ``tenant``'s pool (or group) ``name``; ``name`` itself for None."""
    check_name(name, what)
    if tenant is None:
        return str(name)
    return check_name(tenant, "owner") + SEPARATOR + name


def tenant_of(pool: str) -> str | None:
    """The owner in a pool's (or group's) id, if it has one."""
    tenant, separator, _ = pool.partition(SEPARATOR)
    return tenant if separator else None


def local_name(pool: str) -> str:
    """A pool's (or group's) name, as its owner calls it: its id without the owner."""
    return pool.rpartition(SEPARATOR)[2]


def check_holder(owner: Any) -> str:
    """A lease's holder: 1-256 characters of text (it is journaled with the lease)."""
    try:
        valid = isinstance(owner, str) and 0 < len(owner) <= 256 and bool(owner.encode())
    except UnicodeEncodeError:  # a lone surrogate
        valid = False
    if not valid:
        raise InvalidInput("an owner is 1-256 characters of text")
    return str(owner)


def check_group(name: Any, pools: Any) -> list[str]:
    """A group's definition checked: its id, and 1-``MAX_GROUP_POOLS`` distinct pools
    of the same owner."""
    check_id(name, "group")
    if not isinstance(pools, list) or not 1 <= len(pools) <= MAX_GROUP_POOLS:
        raise InvalidInput(f"a group has 1-{MAX_GROUP_POOLS} pools")
    for pool in pools:
        check_id(pool)
        if tenant_of(pool) != tenant_of(name):
            raise InvalidInput("a group holds its owner's pools only", pool=local_name(pool))
    if len(set(pools)) != len(pools):
        raise InvalidInput("a group names each pool once", pools=[local_name(p) for p in pools])
    return pools


def make_spec(
    name: str,
    kind: str,
    capacity: int | None = None,
    *,
    ttl_s: float | None = None,
    quota_per_owner: int | None = None,
    max_waiters: int | None = None,
    max_ttl_s: float = float("inf"),
    max_waiters_cap: int | None = None,
) -> PoolSpec:
    """Check a pool definition and make it a ``PoolSpec`` (InvalidInput if it is not
    valid). ``name`` is the pool's id (``pool_id``); ``max_waiters_cap`` is the
    longest queue a pool may ask for."""
    check_id(name)
    try:
        pool_kind = PoolKind(kind)
    except ValueError:
        raise InvalidInput("kind is 'mutex' or 'semaphore'", kind=str(kind)[:50]) from None
    if pool_kind is PoolKind.MUTEX:
        if capacity not in (None, 1):
            raise InvalidInput("a mutex has capacity 1", capacity=capacity)
        capacity = 1
    if not is_int(capacity) or not 1 <= capacity <= MAX_CAPACITY:  # type: ignore[operator]
        raise InvalidInput(f"capacity is an integer 1-{MAX_CAPACITY}", capacity=capacity)
    if ttl_s is not None:
        check_ttl(ttl_s, max_ttl_s)
    if quota_per_owner is not None and (
        not is_int(quota_per_owner) or not 1 <= quota_per_owner <= MAX_CAPACITY
    ):
        raise InvalidInput(
            f"quota_per_owner is an integer 1-{MAX_CAPACITY}", quota_per_owner=quota_per_owner
        )
    cap = MAX_WAITERS if max_waiters_cap is None else max_waiters_cap
    if max_waiters is not None and (not is_int(max_waiters) or not 0 <= max_waiters <= cap):
        raise InvalidInput(f"max_waiters is an integer 0-{cap}", max_waiters=max_waiters)
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


def is_int(value: Any) -> bool:
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


__all__ = [
    "ENDED_KEPT",
    "MAX_CAPACITY",
    "MAX_GROUP_POOLS",
    "MAX_WAITERS",
    "SEPARATOR",
    "BookSnapshot",
    "Lease",
    "LeaseState",
    "PoolBook",
    "PoolKind",
    "PoolSpec",
    "PoolState",
    "Usage",
    "WaitQueue",
    "Waiter",
    "check_group",
    "check_holder",
    "check_id",
    "check_name",
    "check_ttl",
    "local_name",
    "make_spec",
    "pick_least_loaded",
    "pool_id",
    "tenant_of",
]
