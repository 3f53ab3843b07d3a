"""The cache's Python client, usable from any Ray task, actor or Serve replica.

It routes each key to its shard by rendezvous hashing, splits batches per
shard and sends the parts in parallel, coalesces concurrent reads to one shard
into one call (``actors.runtime.batching``), and can keep a near cache
(``actors.runtime.near_cache``): local copies that are leases granted by the owning
shard, dropped as soon as a write to them anywhere is acknowledged.
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
    SHARDS_PREFIX,
    CacheShardActor,
    check_batch,
    check_key,
    check_value,
)
from actors.runtime.batching import Coalescer
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput
from actors.runtime.near_cache import NearCache
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards


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

    async def get_raw(self, key: str) -> bytes | None:
        """The value's JSON bytes, or None."""
        check_key(key, self.config)
        if self.near is not None:
            found: bytes | None = self.near.lookup(key)
            if found is not None:
                return found
        return (await self._fetch([key]))[0]

    async def get(self, key: str, default: Any = None) -> Any:
        raw = await self.get_raw(key)
        return default if raw is None else decode(raw)

    async def mget_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values (JSON bytes or None) in the order of ``keys``."""
        keys = list(keys)
        check_batch(len(keys), self.config)
        for key in keys:
            check_key(key, self.config)
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

    async def mget(self, keys: Sequence[str]) -> dict[str, Any]:
        """The keys that exist, with their values."""
        keys = list(keys)
        raw = await self.mget_raw(keys)
        return {
            key: decode(value) for key, value in zip(keys, raw, strict=True) if value is not None
        }

    async def ttl(self, key: str) -> tuple[bool, float | None]:
        """(exists, seconds to live or None for no expiry)."""
        check_key(key, self.config)
        exists, ttl = await self.shards.owner(key).call("ttl", key)
        return exists, ttl

    # --- writes --------------------------------------------------------

    async def set(self, key: str, value: Any, *, ttl_s: float | None = None) -> None:
        await self.set_raw(key, encode(value), ttl_s=ttl_s)

    async def set_raw(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        check_key(key, self.config)
        check_value(value, self.config)
        _check_ttl(ttl_s)
        await self.shards.owner(key).call("set", key, value, ttl_s)

    async def mset(self, items: Mapping[str, Any], *, ttl_s: float | None = None) -> int:
        """Store every item; each shard applies its part all or nothing."""
        encoded = [(key, encode(value)) for key, value in items.items()]
        check_batch(len(encoded), self.config)
        for key, value in encoded:
            check_key(key, self.config)
            check_value(value, self.config)
        _check_ttl(ttl_s)
        groups = self.shards.split(key for key, _ in encoded)
        counts = await asyncio.gather(
            *(
                self.shards[index].call("mset", [encoded[m] for m in members], ttl_s)
                for index, members in groups.items()
            )
        )
        return sum(counts)

    async def delete(self, key: str) -> bool:
        check_key(key, self.config)
        existed: bool = await self.shards.owner(key).call("delete", key)
        return existed

    async def incr(self, key: str, by: int = 1) -> int:
        check_key(key, self.config)
        total: int = await self.shards.owner(key).call("incr", key, by)
        return total

    async def decr(self, key: str, by: int = 1) -> int:
        return await self.incr(key, -by)

    async def expire(self, key: str, ttl_s: float | None) -> bool:
        check_key(key, self.config)
        _check_ttl(ttl_s)
        found: bool = await self.shards.owner(key).call("expire", key, ttl_s)
        return found

    async def clear(self) -> int:
        return sum(await self.shards.call_all("clear"))

    # --- get-or-compute ------------------------------------------------

    async def get_or_compute(
        self,
        key: str,
        loader: Callable[[], Any | Awaitable[Any]],
        *,
        ttl_s: float | None = None,
    ) -> Any:
        """The cached value, or the loader's, computed once cluster-wide for
        concurrent misses. A loader error reaches every waiter (as
        ``LoaderFailed``) and nothing is cached."""
        raw = await self.get_raw(key)
        if raw is not None:
            return decode(raw)
        _check_ttl(ttl_s)
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
        if self.near is not None:
            await self.near.close()

    def __repr__(self) -> str:
        return f"<CacheClient shards={len(self.shards)} near={self.near!r}>"


def _check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not ttl_s > 0:
        raise InvalidInput("ttl_s must be a positive number of seconds", ttl_s=ttl_s)


__all__ = ["CacheClient", "decode", "encode"]
