"""The cache's Python client, usable from any Ray task, actor or Serve replica.

It routes each key to its shard by rendezvous hashing, splits batches per
shard and sends the parts in parallel, coalesces concurrent reads to one shard
into one call (``actors.runtime.batching``), and can keep a near cache
(``actors.runtime.near_cache``): local copies that are leases granted by the owning
shard, dropped as soon as a write to them anywhere is acknowledged.

Every key belongs to an owner: each method takes ``owner`` (the HTTP ingress
passes the caller's user id), and the key is stored, routed, kept near and
invalidated as ``<owner>\x1f<key>`` (``shard.owned_key``), so one owner's
keys are never another's and the near cache and its leases need no change.
``owner=None`` is the deployment's own keyspace, for other services' code.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from actors.cache.settings import CacheSettings
from actors.cache.shard import (
    INT64_MAX,
    INT64_MIN,
    OWNER_SEPARATOR,
    SHARDS_PREFIX,
    CacheShardActor,
    check_batch,
    check_key,
    check_owner,
    check_value,
)
from actors.runtime import metrics
from actors.runtime.batching import Coalescer
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput
from actors.runtime.near_cache import NearCache
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards

#: Owners' keys a client remembers as stored (it forgets them all beyond that).
STORED_KEYS_KEPT = 10_000


def encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as error:
        raise InvalidInput(f"value is not JSON: {error}") from None


def decode(data: bytes) -> Any:
    return orjson.loads(data)


class CacheClient:
    """The cache's shards (``Shards``) seen as one key space; ``connect`` makes one."""

    def __init__(
        self,
        shards: Shards,
        config: CacheSettings,
        *,
        near_cache: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.shards = shards
        self.clock = clock or SystemClock()
        self.near = (
            NearCache(self.clock, max_entries=config.near_max_entries, owners=shards.refs)
            if near_cache
            else None
        )
        # A near-cache hit is a dict lookup; the cache counts its own hits and
        # misses, and the lookups counter follows those totals (an increment
        # under a lock on every hit cost more than the hit).
        near = self.near
        self._counted = (
            []
            if near is None
            else [
                metrics.CACHE_LOOKUPS.follow(lambda: near.hits, tier="near", result="hit"),
                metrics.CACHE_LOOKUPS.follow(lambda: near.misses, tier="near", result="miss"),
            ]
        )
        #: An ASCII key is within ``max_key_bytes`` if it has at most this many characters
        #: (others are encoded to be measured, and refused if they hold a lone surrogate).
        self._max_key = config.max_key_bytes
        #: Per owner, keys it used lately as stored (``<owner>\x1f<key>``), each
        #: checked once. The one under "" is the owner's prefix (which is the key
        #: "" as stored). At most STORED_KEYS_KEPT in all.
        self._stored: dict[str, dict[str, str]] = {}
        self._remembered = 0
        #: Reads in flight to one shard are coalesced into batched mget calls.
        self._readers = [
            Coalescer(partial(self._read_shard, index), max_batch=config.max_batch_keys)
            for index in range(len(shards))
        ]

    async def _read_shard(self, index: int, keys: list[str]) -> list[tuple[bytes | None, float]]:
        follower = None if self.near is None else self.near.follower
        answers: list[tuple[bytes | None, float]] = await self.shards[index].call(
            "mget", keys, follower
        )
        return answers

    @classmethod
    def connect(cls, settings: Settings | None = None, *, near_cache: bool = False) -> CacheClient:
        """A client of the deployment's shards, starting any that are not running."""
        settings = settings or Settings()
        config = CacheSettings.of(settings)
        shards = Shards(CacheShardActor, SHARDS_PREFIX, config.shards, settings)
        return cls(shards, config, near_cache=near_cache)

    # --- reads ---------------------------------------------------------

    def _key(self, key: str, owner: str | None) -> str:
        """``owner``'s ``key`` as its shard stores it, checked. On every read, so
        kept cheap: an ASCII key is measured by its length, and a key
        an owner used lately is checked and joined to its owner once."""
        if owner is None:
            if not key.isascii() or len(key) > self._max_key or OWNER_SEPARATOR in key:
                check_key(key, self.config)
            return key
        known = self._stored.get(owner)
        stored = None if known is None else known.get(key)
        return self._remember(key, owner) if stored is None else stored

    def _remember(self, key: str, owner: str) -> str:
        check_key(key, self.config)
        known = self._stored.get(owner)
        if known is None or self._remembered >= STORED_KEYS_KEPT:
            if self._remembered >= STORED_KEYS_KEPT:
                self._stored.clear()
                self._remembered = 0
            known = self._stored[owner] = {"": check_owner(owner) + OWNER_SEPARATOR}
        stored = known[key] = known[""] + key
        self._remembered += 1
        return stored

    def _keys(self, keys: list[str], owner: str | None) -> list[str]:
        check_batch(len(keys), self.config)
        longest = self._max_key
        for key in keys:
            if not key.isascii() or len(key) > longest or OWNER_SEPARATOR in key:
                check_key(key, self.config)
        if owner is None:
            return keys
        known = self._stored.get(owner)
        prefix = known[""] if known is not None else check_owner(owner) + OWNER_SEPARATOR
        return [prefix + key for key in keys]

    async def get_raw(self, key: str, *, owner: str | None = None) -> bytes | None:
        """The value's JSON bytes, or None."""
        # ``_key``'s usual case written out: a near-cache hit costs little more.
        known = None if owner is None else self._stored.get(owner)
        stored = None if known is None else known.get(key)
        key = self._key(key, owner) if stored is None else stored
        if self.near is not None:
            found: bytes | None = self.near.lookup(key)
            if found is not None:
                return found
        return (await self._fetch([key]))[0]

    async def get(self, key: str, default: Any = None, *, owner: str | None = None) -> Any:
        raw = await self.get_raw(key, owner=owner)
        return default if raw is None else decode(raw)

    async def mget_raw(
        self, keys: Sequence[str], *, owner: str | None = None
    ) -> list[bytes | None]:
        """Values (JSON bytes or None) in the order of ``keys``."""
        keys = self._keys(list(keys), owner)
        results: list[bytes | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        if self.near is not None:
            for i, key in enumerate(keys):
                results[i] = self.near.lookup(key)
            missing = [i for i in missing if results[i] is None]
        for i, value in zip(missing, await self._fetch([keys[i] for i in missing]), strict=True):
            results[i] = value
        return results

    async def _fetch(self, keys: list[str]) -> list[bytes | None]:
        """Read ``keys`` from their shards: a coalesced call per shard, all in parallel.

        With a near cache, each value read comes with a lease and is kept
        until it ends (counted from before the request left, so the copy
        never outlives the shard's lease), unless the key was invalidated
        meanwhile."""
        results: list[bytes | None] = [None] * len(keys)

        async def fetch(index: int, members: list[int]) -> None:
            wanted = [keys[m] for m in members]
            if self.near is not None:
                values = await self.near.read_through(index, wanted, self._readers[index].submit)
            else:
                values = [value for value, _ in await self._readers[index].submit(wanted)]
            for member, value in zip(members, values, strict=True):
                results[member] = value

        groups = self.shards.split(keys)
        if len(groups) == 1:
            await fetch(*groups.popitem())
        else:
            await asyncio.gather(*(fetch(index, members) for index, members in groups.items()))
        return results

    async def mget(self, keys: Sequence[str], *, owner: str | None = None) -> dict[str, Any]:
        """The keys that exist, with their values."""
        keys = list(keys)
        raw = await self.mget_raw(keys, owner=owner)
        return {
            key: decode(value) for key, value in zip(keys, raw, strict=True) if value is not None
        }

    async def ttl(self, key: str, *, owner: str | None = None) -> tuple[bool, float | None]:
        """(exists, seconds to live or None for no expiry)."""
        key = self._key(key, owner)
        exists, ttl = await self.shards.owner(key).call("ttl", key)
        return exists, ttl

    # --- writes --------------------------------------------------------

    async def set(
        self, key: str, value: Any, *, ttl_s: float | None = None, owner: str | None = None
    ) -> None:
        await self.set_raw(key, encode(value), ttl_s=ttl_s, owner=owner)

    async def set_raw(
        self, key: str, value: bytes, *, ttl_s: float | None = None, owner: str | None = None
    ) -> None:
        key = self._key(key, owner)
        check_value(value, self.config)
        self._check_ttl(ttl_s)
        await self.shards.owner(key).call("set", key, value, ttl_s)

    async def mset(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None, owner: str | None = None
    ) -> int:
        """Store every item; each shard applies its part all or nothing."""
        stored = self._keys(list(items), owner)
        encoded = [(key, encode(value)) for key, value in zip(stored, items.values(), strict=True)]
        for _, value in encoded:
            check_value(value, self.config)
        self._check_ttl(ttl_s)
        groups = self.shards.split(key for key, _ in encoded)
        counts = await asyncio.gather(
            *(
                self.shards[index].call("mset", [encoded[m] for m in members], ttl_s)
                for index, members in groups.items()
            )
        )
        return sum(counts)

    async def delete(self, key: str, *, owner: str | None = None) -> bool:
        key = self._key(key, owner)
        existed: bool = await self.shards.owner(key).call("delete", key)
        return existed

    async def incr(self, key: str, by: int = 1, *, owner: str | None = None) -> int:
        if isinstance(by, bool) or not isinstance(by, int) or not INT64_MIN <= by <= INT64_MAX:
            raise InvalidInput("by is a 64-bit integer", by=str(by)[:40])
        key = self._key(key, owner)
        total: int = await self.shards.owner(key).call("incr", key, by)
        return total

    async def decr(self, key: str, by: int = 1, *, owner: str | None = None) -> int:
        return await self.incr(key, -by, owner=owner)

    async def expire(self, key: str, ttl_s: float | None, *, owner: str | None = None) -> bool:
        key = self._key(key, owner)
        self._check_ttl(ttl_s)
        found: bool = await self.shards.owner(key).call("expire", key, ttl_s)
        return found

    async def clear(self) -> int:
        """Drop every key of every owner (for the deployment's operators, not over HTTP)."""
        return sum(await self.shards.call_all("clear"))

    def _check_ttl(self, ttl_s: float | None) -> None:
        if ttl_s is None:
            return
        if (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, int | float)
            or not 0 < ttl_s <= self.config.max_ttl_s
        ):
            raise InvalidInput(
                f"ttl_s is a number of seconds > 0 and <= {self.config.max_ttl_s:g}", ttl_s=ttl_s
            )

    # --- get-or-compute ------------------------------------------------

    async def get_or_compute(
        self,
        key: str,
        loader: Callable[[], Any | Awaitable[Any]],
        *,
        ttl_s: float | None = None,
        owner: str | None = None,
    ) -> Any:
        """The cached value, or the loader's, computed once cluster-wide for
        concurrent misses. A loader error reaches every waiter (as
        ``LoaderFailed``) and nothing is cached."""
        raw = await self.get_raw(key, owner=owner)
        if raw is not None:
            return decode(raw)
        self._check_ttl(ttl_s)
        key = self._key(key, owner)
        shard = self.shards.owner(key)
        kind, payload = await shard.call("load_begin", key)
        if kind == "hit":
            return decode(payload)
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
            encoded = encode(value)
            check_value(encoded, self.config)
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            await shard.call("load_end", key, payload, None, reason, None)
            raise
        await shard.call("load_end", key, payload, encoded, None, ttl_s)
        return value

    # --- stats and lifecycle -----------------------------------------

    async def start(self) -> None:
        """Start (or find) every shard and wait until each answers."""
        await self.shards.start()

    async def usage(self, owner: str | None = None) -> dict[str, Any]:
        """What ``owner`` holds: entries and bytes in all, and per shard (each shard
        caps them at ``max_entries_per_owner`` and ``max_bytes_per_owner``)."""
        name = "" if owner is None else check_owner(owner)
        shards: list[dict[str, int]] = await self.shards.call_all("usage", name)
        return {
            "entries": sum(s["entries"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
        }

    async def stats(self) -> dict[str, Any]:
        """Per-shard stats, their totals, and this client's near cache."""
        shards = await self.shards.call_all("stats")
        total: dict[str, int] = {}
        for one in shards:
            for name, value in one.items():
                if isinstance(value, int):
                    total[name] = total.get(name, 0) + value
        near = None if self.near is None else self.near.stats()
        return {"shards": shards, "total": total, "near": near}

    async def close(self) -> None:
        """Stop following shards and let them forget this client's leases."""
        for counted in self._counted:
            counted.stop()
        if self.near is not None:
            await self.near.close()

    def __repr__(self) -> str:
        return f"<CacheClient shards={len(self.shards)} near={self.near!r}>"


__all__ = ["CacheClient", "decode", "encode"]
