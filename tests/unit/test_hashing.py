"""Rendezvous hashing: stable, even, and minimal movement when shards are added."""

from __future__ import annotations

from collections import Counter

import pytest

from actors.runtime.hashing import Rendezvous

KEYS = [f"key-{i}" for i in range(10_000)]


def test_owner_is_deterministic_across_instances() -> None:
    first, second = Rendezvous(8), Rendezvous(8)
    assert [first.owner(k) for k in KEYS[:500]] == [second.owner(k) for k in KEYS[:500]]


def test_owner_is_in_range_and_one_shard_owns_everything() -> None:
    assert {Rendezvous(5).owner(k) for k in KEYS} == set(range(5))
    assert {Rendezvous(1).owner(k) for k in KEYS[:100]} == {0}


def test_at_least_one_shard_is_required() -> None:
    with pytest.raises(ValueError):
        Rendezvous(0)


def test_keys_spread_roughly_evenly() -> None:
    counts = Counter(Rendezvous(8).owner(k) for k in KEYS)
    expected = len(KEYS) / 8  # 1250
    assert sorted(counts) == list(range(8))
    assert all(0.8 * expected < count < 1.2 * expected for count in counts.values()), counts


@pytest.mark.parametrize("n", [1, 3, 7])
def test_adding_a_shard_moves_only_keys_it_now_owns(n: int) -> None:
    before, after = Rendezvous(n), Rendezvous(n + 1)
    moved = [k for k in KEYS if before.owner(k) != after.owner(k)]
    assert all(after.owner(k) == n for k in moved)
    share = len(moved) / len(KEYS)
    assert 0.7 / (n + 1) < share < 1.3 / (n + 1), share


def test_split_groups_positions_by_owner() -> None:
    ring = Rendezvous(4)
    keys = KEYS[:200]
    groups = ring.split(keys)
    assert sorted(p for positions in groups.values() for p in positions) == list(range(200))
    for shard, positions in groups.items():
        assert positions == sorted(positions)
        assert all(ring.owner(keys[p]) == shard for p in positions)


def test_split_of_repeated_keys_keeps_every_position() -> None:
    ring = Rendezvous(4)
    groups = ring.split(["x", "y", "x"])
    owner_x = ring.owner("x")
    assert 0 in groups[owner_x] and 2 in groups[owner_x]
    assert sum(len(p) for p in groups.values()) == 3


def test_split_of_nothing_is_empty() -> None:
    assert Rendezvous(4).split([]) == {}
