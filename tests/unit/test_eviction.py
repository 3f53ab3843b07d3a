"""Eviction orders: which key an LRU or LFU cache gives up first."""

from __future__ import annotations

import pytest

from actors.cache.eviction import LFU, LRU, EvictionOrder, eviction_order


def filled(order: EvictionOrder, *keys: str) -> EvictionOrder:
    for key in keys:
        order.add(key)
    return order


@pytest.mark.parametrize("policy, kind", [("lru", LRU), ("lfu", LFU)])
def test_eviction_order_picks_the_policy(policy: str, kind: type) -> None:
    assert isinstance(eviction_order(policy), kind)


# --- LRU -------------------------------------------------------------------


def test_lru_victim_is_the_oldest_added() -> None:
    assert filled(LRU(), "a", "b", "c").victim() == "a"


def test_lru_touch_makes_a_key_the_newest() -> None:
    order = filled(LRU(), "a", "b", "c")
    order.touch("a")
    assert order.victim() == "b"
    order.touch("b")
    assert order.victim() == "c"


def test_lru_re_adding_a_key_makes_it_the_newest() -> None:
    order = filled(LRU(), "a", "b")
    order.add("a")
    assert order.victim() == "b"


def test_lru_remove_skips_the_key_and_ignores_unknown_keys() -> None:
    order = filled(LRU(), "a", "b", "c")
    order.remove("a")
    order.remove("missing")
    assert order.victim() == "b"


# --- LFU -------------------------------------------------------------------


def test_lfu_victim_is_the_least_used() -> None:
    order = filled(LFU(), "a", "b", "c")
    order.touch("a")
    order.touch("c")
    assert order.victim() == "b"


def test_lfu_ties_go_to_the_least_recently_used() -> None:
    order = filled(LFU(), "a", "b", "c")
    for key in ("b", "a", "c"):
        order.touch(key)  # all used twice; b reached that count first
    assert order.victim() == "b"


def test_lfu_re_adding_a_key_counts_as_a_use() -> None:
    order = filled(LFU(), "a", "b")
    order.add("a")
    assert order.victim() == "b"


def test_lfu_new_key_is_the_victim_among_frequent_keys() -> None:
    order = filled(LFU(), "a", "b")
    order.touch("a")
    order.touch("b")
    order.add("c")
    assert order.victim() == "c"


def test_lfu_min_count_moves_up_when_its_last_key_is_touched() -> None:
    order = filled(LFU(), "a", "b")
    order.touch("a")
    order.touch("a")  # a: 3, b: 1
    order.touch("b")  # b: 2, the count-1 bucket is gone
    assert order.victim() == "b"
    order.touch("b")
    order.touch("b")  # b: 4, a: 3
    assert order.victim() == "a"


def test_lfu_min_count_is_found_again_after_removing_the_rarest_key() -> None:
    order = filled(LFU(), "rare", "mid", "hot")
    for _ in range(2):
        order.touch("mid")  # 3
    for _ in range(4):
        order.touch("hot")  # 5
    order.remove("rare")
    assert order.victim() == "mid"
    order.remove("mid")
    assert order.victim() == "hot"


def test_lfu_remove_from_a_shared_bucket_keeps_the_min_count() -> None:
    order = filled(LFU(), "a", "b", "c")
    order.touch("c")
    order.remove("a")
    assert order.victim() == "b"


def test_lfu_remove_ignores_unknown_keys_and_allows_re_adding() -> None:
    order = filled(LFU(), "a")
    order.touch("a")
    order.remove("missing")
    order.remove("a")
    order.add("b")
    order.add("a")  # starts again at one use
    order.touch("b")
    assert order.victim() == "a"
