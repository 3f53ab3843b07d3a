"""Eviction orders for a bounded cache: least recently or least frequently used.

Both answer ``victim()`` in O(1). LFU keeps keys in buckets by use count (the
O(1) LFU of Shah, Mitra and Matani); ties within a count go to the least
recently used.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol


class EvictionOrder(Protocol):
    def add(self, key: str) -> None: ...
    def touch(self, key: str) -> None: ...
    def remove(self, key: str) -> None: ...
    def victim(self) -> str: ...


class LRU:
    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def touch(self, key: str) -> None:
        self._order.move_to_end(key)

    def remove(self, key: str) -> None:
        self._order.pop(key, None)

    def victim(self) -> str:
        return next(iter(self._order))


class LFU:
    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._buckets: dict[int, OrderedDict[str, None]] = {}
        self._min = 0

    def add(self, key: str) -> None:
        if key in self._count:
            self.touch(key)
            return
        self._count[key] = 1
        self._buckets.setdefault(1, OrderedDict())[key] = None
        self._min = 1

    def touch(self, key: str) -> None:
        count = self._count[key]
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]
            if self._min == count:
                self._min = count + 1
        self._count[key] = count + 1
        self._buckets.setdefault(count + 1, OrderedDict())[key] = None

    def remove(self, key: str) -> None:
        count = self._count.pop(key, None)
        if count is None:
            return
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]
            if self._min == count:
                self._min = min(self._buckets, default=0)

    def victim(self) -> str:
        return next(iter(self._buckets[self._min]))


def eviction_order(policy: str) -> EvictionOrder:
    return LFU() if policy == "lfu" else LRU()
