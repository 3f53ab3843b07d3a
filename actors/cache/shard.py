"""The distributed cache (service 4): one shard of the key space.

A ``CacheShard`` owns the keys that rendezvous hashing gives it. Values are
JSON documents kept as their encoded bytes (clients encode), so sizes are
known and HTTP answers need no re-encoding.

- TTL: checked lazily on every read, and a periodic ``sweep`` removes what
  nobody reads; both use an injectable clock.
- Owners: every key belongs to an owner, and is stored as
  ``<owner>\x1f<key>`` (``owned_key``): a key of one owner is never another's
  (clients refuse keys that hold ``\x1f``). Keys without an owner belong to
  the deployment's own callers; HTTP always names the caller.
- Caps on entries and bytes, with LRU (or LFU) eviction: per owner (a write
  past its owner's cap evicts that owner's own entries) and per shard (a full
  shard evicts from the owner holding the most bytes in it). Each owner has
  its own eviction order, so nobody's reads or writes reorder another's keys.
- Single-flight ``load_begin``/``load_end``: concurrent misses of one key elect
  one loader; the others wait here for its result or its error.
- Near-cache coherence by leases: a client that asks with a follower id may
  keep the value until its lease ends. A write to the key invalidates every
  holder (``actors.runtime.leases``) and is acknowledged only when each has
  confirmed or its lease has run out, so a reader never sees a stale value
  after a write is acknowledged, and a holder that stopped answering delays a
  writer by at most one lease. A restarted shard has forgotten its holders, so
  it takes no writes until one lease has passed.

The cache is not durable by design: a restarted shard starts empty (its
restarts are counted in the stats); the other shards keep serving.
"""

from __future__ import annotations

import asyncio
import heapq
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import ray

from actors.cache.errors import KeyTooLong, LoaderFailed, LoadTimedOut, NotAnInteger, ValueTooLarge
from actors.cache.eviction import EvictionOrder, eviction_order
from actors.cache.settings import CacheSettings
from actors.runtime import metrics
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import BatchTooLarge, InvalidInput
from actors.runtime.fanout import first_of
from actors.runtime.leases import LeaseOwner, Leases
from actors.runtime.settings import Settings
from actors.runtime.store import open_store
from actors.runtime.supervision import Restart, remote_actor, report_start, run_start_hooks

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Shard actors are named ``cache-shard-<i>`` (``shard_names``).
SHARDS_PREFIX = "cache-shard"
#: Between an owner and a key, in the keys a shard stores; no key may hold it.
OWNER_SEPARATOR = "\x1f"
#: Longest owner id (a user id).
MAX_OWNER_CHARS = 128


def check_key(key: str, config: CacheSettings) -> None:
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\\ud800"
        raise InvalidInput("a key is text: it may not hold a lone surrogate") from None
    if size > config.max_key_bytes:
        raise KeyTooLong(size=size, limit=config.max_key_bytes)
    if OWNER_SEPARATOR in key:
        raise InvalidInput("a key may not hold the character U+001F")


def check_owner(owner: str) -> str:
    if (
        not isinstance(owner, str)
        or not 0 < len(owner) <= MAX_OWNER_CHARS
        or OWNER_SEPARATOR in owner
    ):
        raise InvalidInput(f"an owner is 1-{MAX_OWNER_CHARS} characters without U+001F")
    return owner


def owned_key(owner: str | None, key: str) -> str:
    """The key a shard stores for ``owner``'s ``key`` (the key itself for None)."""
    return key if owner is None else owner + OWNER_SEPARATOR + key


def owner_of(stored: str) -> str:
    """The owner of a stored key ("" for the deployment's own keys)."""
    owner, separator, _ = stored.partition(OWNER_SEPARATOR)
    return owner if separator else ""


def check_stored_key(key: str, config: CacheSettings) -> None:
    """A key as a shard stores it: an owner's key (after the owner), or the deployment's."""
    owner, separator, own = key.partition(OWNER_SEPARATOR)
    if not separator:
        own = owner
    elif not 0 < len(owner) <= MAX_OWNER_CHARS:
        raise InvalidInput(f"an owner is 1-{MAX_OWNER_CHARS} characters without U+001F")
    check_key(own, config)


def check_value(value: bytes, config: CacheSettings) -> None:
    if len(value) > config.max_value_bytes:
        raise ValueTooLarge(size=len(value), limit=config.max_value_bytes)


def check_batch(count: int, config: CacheSettings) -> None:
    if count > config.max_batch_keys:
        raise BatchTooLarge(count=count, limit=config.max_batch_keys)


@dataclass(slots=True, eq=False)
class _Owner:
    """What one owner holds in a shard, and the order its entries are evicted in."""

    name: str
    order: EvictionOrder
    bytes: int = 0
    entries: int = 0


@dataclass(slots=True)
class _Entry:
    value: bytes
    size: int
    expires_at: float | None
    owner: _Owner


@dataclass
class _Flight:
    token: str
    deadline: float
    result: asyncio.Future[bytes]
    overtaken: bool = False  #: the key was written while loading: do not store the result
    waiters: int = 0  #: callers waiting for this load


@dataclass
class ShardStats:
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    evictions: int = 0
    expirations: int = 0
    loads: int = 0
    load_errors: int = 0
    restarts: int = 0


class CacheShard(LeaseOwner):
    """The state and rules of one shard; ``CacheShardActor`` runs it as a Ray actor."""

    def __init__(
        self, settings: Settings, *, name: str = "cache-shard", clock: Clock | None = None
    ) -> None:
        self.config = CacheSettings.of(settings)
        self.name = name
        self.clock = clock or SystemClock()
        self._entries: dict[str, _Entry] = {}
        #: Owners holding entries here, by name ("" for the deployment's own keys).
        self._owners: dict[str, _Owner] = {}
        #: (-bytes, owner) pushed whenever an owner's bytes grow: the largest owner
        #: is the first item that matches its owner now (``_largest``).
        self._sizes: list[tuple[int, str]] = []
        self._expiry: list[tuple[float, str]] = []
        self._bytes = 0
        self._flights: dict[str, _Flight] = {}
        self.leases = Leases(self.clock, lease_s=self.config.near_lease_s)
        self.stats_ = ShardStats()
        self.node_id: str | None = None  #: the Ray node it runs on, when it is an actor

    # --- entries -------------------------------------------------------

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.expires_at is not None
            and entry.expires_at <= self.clock.now()
        ):
            self._remove(key)
            self.stats_.expirations += 1
            return None
        return entry

    def _remove(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            owner = entry.owner
            owner.bytes -= entry.size
            owner.entries -= 1
            owner.order.remove(key)
            if not owner.entries and self._owners.get(owner.name) is owner:
                del self._owners[owner.name]
        return entry

    def _evict(self, owner: _Owner) -> None:
        self._remove(owner.order.victim())
        self.stats_.evictions += 1

    def _largest(self) -> _Owner:
        """The owner holding the most bytes here (there is one: the shard is not empty)."""
        while True:
            negative, name = self._sizes[0]
            owner = self._owners.get(name)
            if owner is not None and owner.bytes == -negative:
                return owner
            heapq.heappop(self._sizes)  # stale: the owner shrank or left
            if owner is not None:
                heapq.heappush(self._sizes, (-owner.bytes, name))

    def _check_entry(self, key: str, value: bytes) -> int:
        """The bytes ``key`` and ``value`` take, once checked against the limits."""
        check_stored_key(key, self.config)
        check_value(value, self.config)
        size = len(key.encode()) + len(value)
        if size > self.config.max_bytes_per_owner:
            raise ValueTooLarge(size=size, limit=self.config.max_bytes_per_owner)
        return size

    def _store(self, key: str, value: bytes, expires_at: float | None) -> None:
        size = self._check_entry(key, value)
        config = self.config
        self._remove(key)
        name = owner_of(key)
        # Make room before adding: under LFU the new key has the lowest count,
        # so evicting after adding would drop the key just written. The owner's
        # own cap first, then the shard's, taken from whoever holds the most.
        owner = self._owners.get(name)
        while (
            owner is not None
            and owner.entries
            and (
                owner.entries >= config.max_entries_per_owner
                or owner.bytes + size > config.max_bytes_per_owner
            )
        ):
            self._evict(owner)
        while self._entries and (
            len(self._entries) >= config.max_entries or self._bytes + size > config.max_bytes
        ):
            self._evict(self._largest())
        owner = self._owners.get(name)
        if owner is None:
            owner = self._owners[name] = _Owner(name, eviction_order(config.eviction))
        entry = _Entry(value, size, expires_at, owner)
        self._entries[key] = entry
        self._bytes += size
        owner.bytes += size
        owner.entries += 1
        owner.order.add(key)
        heapq.heappush(self._sizes, (-owner.bytes, name))
        if len(self._sizes) > 2 * len(self._owners) + 1024:  # drop stale items
            self._sizes = [(-o.bytes, n) for n, o in self._owners.items()]
            heapq.heapify(self._sizes)
        if expires_at is not None:
            heapq.heappush(self._expiry, (expires_at, key))
        flight = self._flights.get(key)
        if flight is not None:
            flight.overtaken = True

    def _expires_at(self, ttl_s: float | None) -> float | None:
        return None if ttl_s is None else self.clock.now() + ttl_s

    def sweep(self) -> int:
        """Remove expired entries; returns how many."""
        now, removed = self.clock.now(), 0
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at == expires_at:
                self._remove(key)
                removed += 1
        if len(self._expiry) > 2 * len(self._entries) + 1024:  # drop stale heap items
            self._expiry = [(e.expires_at, k) for k, e in self._entries.items() if e.expires_at]
            heapq.heapify(self._expiry)
        self.leases.sweep()
        self.stats_.expirations += removed
        return removed

    # --- reads ---------------------------------------------------------

    def _read(self, key: str, follower: str | None) -> tuple[bytes | None, float]:
        entry = self._live(key)
        if entry is None:
            self.stats_.misses += 1
            return None, 0.0
        self.stats_.hits += 1
        entry.owner.order.touch(key)
        if follower is None:
            return entry.value, 0.0
        expires_in = None if entry.expires_at is None else entry.expires_at - self.clock.now()
        return entry.value, self.leases.grant(key, follower, expires_in_s=expires_in)

    def _count_lookups(self, hits: int, misses: int) -> None:
        """Export the hits and misses counted since they were ``hits`` and ``misses``
        (once per call, not per key: ``mget`` reads thousands)."""
        metrics.CACHE_LOOKUPS.inc(self.stats_.hits - hits, tier="shard", result="hit")
        metrics.CACHE_LOOKUPS.inc(self.stats_.misses - misses, tier="shard", result="miss")

    async def get(self, key: str, follower: str | None = None) -> tuple[bytes | None, float]:
        """The value (or None) and, for a follower, how long it may keep it."""
        hits, misses = self.stats_.hits, self.stats_.misses
        found = self._read(key, follower)
        self._count_lookups(hits, misses)
        return found

    async def mget(
        self, keys: list[str], follower: str | None = None
    ) -> list[tuple[bytes | None, float]]:
        check_batch(len(keys), self.config)
        hits, misses = self.stats_.hits, self.stats_.misses
        found = [self._read(key, follower) for key in keys]
        self._count_lookups(hits, misses)
        return found

    async def ttl(self, key: str) -> tuple[bool, float | None]:
        """Whether the key exists, and its remaining time to live (None: no expiry)."""
        entry = self._live(key)
        if entry is None:
            return False, None
        return True, None if entry.expires_at is None else entry.expires_at - self.clock.now()

    # --- writes --------------------------------------------------------

    async def _before_write(self) -> None:
        await self.leases.before_write()

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._before_write()
        self._store(key, value, self._expires_at(ttl_s))
        self.stats_.sets += 1
        await self._invalidate([key])

    async def mset(self, items: list[tuple[str, bytes]], ttl_s: float | None = None) -> int:
        check_batch(len(items), self.config)
        for key, value in items:  # all or nothing: check before storing any
            self._check_entry(key, value)
        await self._before_write()
        expires_at = self._expires_at(ttl_s)
        for key, value in items:
            self._store(key, value, expires_at)
        self.stats_.sets += len(items)
        await self._invalidate([key for key, _ in items])
        return len(items)

    async def delete(self, key: str) -> bool:
        await self._before_write()
        if self._flights.get(key):
            self._flights[key].overtaken = True
        existed = self._live(key) is not None and self._remove(key) is not None
        self.stats_.deletes += existed
        await self._invalidate([key])
        return existed

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to an integer value (a missing key counts as 0); keeps the TTL."""
        await self._before_write()
        entry = self._live(key)
        current: Any = 0 if entry is None else orjson.loads(entry.value)
        if isinstance(current, bool) or not isinstance(current, int):
            raise NotAnInteger(key=key)
        total = current + by
        if not INT64_MIN <= total <= INT64_MAX:
            raise InvalidInput("the result is outside the 64-bit integer range", key=key)
        self._store(key, orjson.dumps(total), None if entry is None else entry.expires_at)
        self.stats_.sets += 1
        await self._invalidate([key])
        return total

    async def expire(self, key: str, ttl_s: float | None) -> bool:
        """Set (or with None, remove) the key's time to live; False if there is no such key."""
        entry = self._live(key)
        if entry is None:
            return False
        entry.expires_at = self._expires_at(ttl_s)
        if entry.expires_at is not None:
            heapq.heappush(self._expiry, (entry.expires_at, key))
        await self._invalidate([key])  # holders' leases may outlive the new TTL
        return True

    async def clear(self) -> int:
        await self._before_write()
        count = len(self._entries)
        self._entries.clear()
        self._owners.clear()
        self._sizes.clear()
        self._expiry.clear()
        self._bytes = 0
        await self._invalidate(self.leases.held_keys())
        return count

    # --- single flight -------------------------------------------------

    async def load_begin(self, key: str) -> tuple[str, Any]:
        """``("hit", value)`` if cached (or once another caller's load finishes),
        else ``("load", token)``: the caller runs the loader and calls ``load_end``."""
        hits, misses = self.stats_.hits, self.stats_.misses
        value, _ = self._read(key, None)
        self._count_lookups(hits, misses)
        if value is not None:
            return "hit", value
        flight = self._flights.get(key)
        now = self.clock.now()
        if flight is None or flight.deadline <= now:
            flight = _Flight(
                uuid.uuid4().hex,
                now + self.config.load_timeout_s,
                asyncio.get_running_loop().create_future(),
            )
            self._flights[key] = flight
            self.stats_.loads += 1
            return "load", flight.token
        flight.waiters += 1
        try:
            await first_of(asyncio.shield(flight.result), self.clock.sleep(flight.deadline - now))
        finally:
            flight.waiters -= 1
        if not flight.result.done():
            raise LoadTimedOut(key=key, timeout_s=self.config.load_timeout_s)
        return "hit", flight.result.result()  # raises the loader's error to every waiter

    async def load_end(
        self, key: str, token: str, value: bytes | None, error: str | None, ttl_s: float | None
    ) -> bool:
        """Finish a load: store ``value`` and wake the waiters, or pass ``error`` to them."""
        flight = self._flights.get(key)
        if flight is None or flight.token != token:
            return False  # timed out and taken over; the result is dropped
        del self._flights[key]
        if error is not None or value is None:
            self.stats_.load_errors += 1
            flight.result.set_exception(LoaderFailed(error or "loader returned nothing", key=key))
            flight.result.exception()  # retrieved: waiters may be none
            return True
        if not flight.overtaken:
            await self._before_write()
            self._store(key, value, self._expires_at(ttl_s))
            await self._invalidate([key])
        flight.result.set_result(value)
        return True

    # --- stats ---------------------------------------------------------

    async def usage(self, owner: str) -> dict[str, int]:
        """What ``owner`` holds in this shard: entries and bytes."""
        found = self._owners.get(owner)
        return (
            {"entries": found.entries, "bytes": found.bytes}
            if found
            else {"entries": 0, "bytes": 0}
        )

    async def stats(self) -> dict[str, Any]:
        s = self.stats_
        return {
            "shard": self.name,
            "node_id": self.node_id,
            "entries": len(self._entries),
            "bytes": self._bytes,
            "owners": len(self._owners),
            "hits": s.hits,
            "misses": s.misses,
            "sets": s.sets,
            "deletes": s.deletes,
            "evictions": s.evictions,
            "expirations": s.expirations,
            "loads": s.loads,
            "load_errors": s.load_errors,
            "load_waiters": sum(flight.waiters for flight in self._flights.values()),
            "invalidations": self.leases.invalidations,
            "near_followers": self.leases.followers(),
            "restarts": s.restarts,
        }

    def __repr__(self) -> str:
        s = self.stats_
        return (
            f"<CacheShard {self.name} entries={len(self._entries)} bytes={self._bytes} "
            f"hits={s.hits} misses={s.misses} evictions={s.evictions} restarts={s.restarts}>"
        )


class _CacheShardProcess(CacheShard):
    """A ``CacheShard`` in its own actor process: restart hook and sweep loop."""

    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        run_start_hooks(settings, "cache", name)
        super().__init__(settings, name=name)
        self.node_id = ray.get_runtime_context().get_node_id()
        store = open_store(settings, name)
        self.stats_.restarts = await report_start(store, name, kind=metrics.kind_of(self))
        await store.close()
        if self.stats_.restarts:
            self.leases.hold_writes()  # copies granted before the crash may still be held
        self._sweeper = every(self.clock, self.config.sweep_interval_s, self.sweep)


#: Not durable, so restarting is all a shard needs; calls in flight are retried.
CacheShardActor = remote_actor(
    _CacheShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)


__all__ = [
    "MAX_OWNER_CHARS",
    "OWNER_SEPARATOR",
    "SHARDS_PREFIX",
    "CacheShard",
    "CacheShardActor",
    "check_batch",
    "check_key",
    "check_owner",
    "check_stored_key",
    "check_value",
    "owned_key",
    "owner_of",
]
