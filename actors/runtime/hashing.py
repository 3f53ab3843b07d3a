"""Rendezvous (highest random weight) hashing.

Each key goes to the shard that scores highest for it. Adding a shard moves
only the keys the new shard now wins (about 1/N of them); removing one moves
only its own keys. Scores come from xxh3 seeded per shard, so routing is the
same in every process.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import xxhash

#: Keys whose owner each ``Rendezvous`` remembers.
OWNERS_REMEMBERED = 1 << 16


class Rendezvous:
    def __init__(self, shard_count: int) -> None:
        if shard_count < 1:
            raise ValueError("at least one shard")
        self.shard_count = shard_count
        self._seeds = [xxhash.xxh3_64_intdigest(f"shard-{i}".encode()) for i in range(shard_count)]
        #: Hot keys repeat: remembering owners costs a dict lookup instead of N hashes.
        self._remembered = lru_cache(maxsize=OWNERS_REMEMBERED)(self._owner)

    def owner(self, key: str) -> int:
        """Index of the shard that owns ``key``."""
        return self._remembered(key)

    def _owner(self, key: str) -> int:
        if self.shard_count == 1:
            return 0
        data = key.encode()
        best, best_score = 0, -1
        for index, seed in enumerate(self._seeds):
            score = xxhash.xxh3_64_intdigest(data, seed=seed)
            if score > best_score:
                best, best_score = index, score
        return best

    def split(self, keys: Iterable[str]) -> dict[int, list[int]]:
        """Positions of ``keys`` grouped by owning shard."""
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(self.owner(key), []).append(position)
        return groups

    def __repr__(self) -> str:
        return f"<Rendezvous shards={self.shard_count}>"
