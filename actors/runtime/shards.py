"""A service's shard actors as one object: named, started on first use, keyed by hashing.

Every sharded service (cache shards, session stores, brokers, ledger shards,
resource pools, scheduler partitions) runs ``count`` actors of one class,
named ``<prefix>-<i>`` in the deployment's namespace, each made as
``actor_class(settings, name)``. ``Shards`` holds an ``ActorRef`` per shard
(found or started on first use, re-resolved after it died; shard ``i`` starts
on node ``i`` modulo the nodes: ``spread_placement``), routes a key to its
owner by rendezvous hashing, and starts them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from actors.runtime.hashing import Rendezvous
from actors.runtime.settings import Settings
from actors.runtime.supervision import ActorRef


def shard_names(prefix: str, count: int) -> list[str]:
    """The actor names of ``count`` shards called ``prefix``."""
    return [f"{prefix}-{index}" for index in range(count)]


class Shards:
    """``count`` actors of ``actor_class`` named ``<prefix>-<i>``, keyed by rendezvous hashing."""

    def __init__(self, actor_class: Any, prefix: str, count: int, settings: Settings) -> None:
        self.prefix = prefix
        self.refs = [
            ActorRef(
                actor_class, name, settings, name, namespace=settings.namespace, spread_index=i
            )
            for i, name in enumerate(shard_names(prefix, count))
        ]
        self.ring = Rendezvous(count)

    def index(self, key: str) -> int:
        """The position of the shard that owns ``key``."""
        return self.ring.owner(key)

    def owner(self, key: str) -> ActorRef:
        """The shard that owns ``key``."""
        return self.refs[self.ring.owner(key)]

    def split(self, keys: Iterable[str]) -> dict[int, list[int]]:
        """Positions of ``keys`` grouped by the index of their shard."""
        return self.ring.split(keys)

    async def call_all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``method`` on every shard at once; their answers in shard order."""
        return list(await asyncio.gather(*(ref.call(method, *args, **kwargs) for ref in self)))

    async def start(self) -> None:
        """Start (or find) every shard and wait until each answers."""
        await self.call_all("ping")

    def __getitem__(self, index: int) -> ActorRef:
        return self.refs[index]

    def __iter__(self) -> Iterator[ActorRef]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        return f"<Shards {self.prefix} x{len(self.refs)}>"


__all__ = ["Shards", "shard_names"]
