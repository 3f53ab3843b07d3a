"""NearCache: leased local copies, LRU-bounded, that never outlive an invalidation."""

from __future__ import annotations

import pytest

from actors.runtime.clock import FakeClock
from actors.runtime.near_cache import NearCache

LEASE_S = 2.0


@pytest.fixture
def near(clock: FakeClock) -> NearCache:
    return NearCache(clock, max_entries=3)


def offer(near: NearCache, key: str, value: bytes = b"v", *, since: int | None = None) -> None:
    """Offer ``value`` under a fresh lease, fetched at ``since`` (default: now)."""
    generation = near.generation if since is None else since
    near.offer(key, value, near.clock.now() + LEASE_S, generation)


def test_lookup_hits_and_misses_are_counted(near: NearCache) -> None:
    assert near.lookup("k") is None
    offer(near, "k", b"1")
    assert near.lookup("k") == b"1"
    assert (near.hits, near.misses, len(near)) == (1, 1, 1)


def test_an_entry_expires_at_its_lease_deadline(near: NearCache, clock: FakeClock) -> None:
    offer(near, "k")
    clock.advance(LEASE_S - 0.1)
    assert near.lookup("k") == b"v"
    clock.advance(0.1)
    assert near.lookup("k") is None
    assert len(near) == 0


def test_an_offer_already_past_its_deadline_is_refused(near: NearCache, clock: FakeClock) -> None:
    near.offer("k", b"v", clock.now(), near.generation)
    assert near.lookup("k") is None


def test_the_least_recently_used_entry_goes_first(near: NearCache) -> None:
    for key in ("a", "b", "c"):
        offer(near, key)
    assert near.lookup("a") == b"v"
    offer(near, "d")
    assert len(near) == 3
    assert near.lookup("b") is None
    assert [near.lookup(k) for k in ("a", "c", "d")] == [b"v"] * 3


def test_a_new_offer_replaces_the_value(near: NearCache) -> None:
    offer(near, "k", b"1")
    offer(near, "k", b"2")
    assert near.lookup("k") == b"2"
    assert len(near) == 1


def test_invalidate_drops_only_that_key(near: NearCache) -> None:
    offer(near, "a")
    offer(near, "b")
    near.invalidate("a")
    near.invalidate("never-held")
    assert near.lookup("a") is None
    assert near.lookup("b") == b"v"


def test_clear_drops_everything(near: NearCache) -> None:
    offer(near, "a")
    offer(near, "b")
    near.clear()
    assert len(near) == 0


# --- the generation race: an answer that lands after an invalidation -------


def test_an_offer_fetched_before_an_invalidation_of_its_key_is_refused(
    near: NearCache,
) -> None:
    since = near.generation  # the fetch starts
    near.invalidate("k")  # the invalidation overtakes the answer
    offer(near, "k", b"stale", since=since)
    assert near.lookup("k") is None


def test_an_offer_fetched_after_the_invalidation_is_accepted(near: NearCache) -> None:
    near.invalidate("k")
    offer(near, "k", b"fresh")
    assert near.lookup("k") == b"fresh"


def test_an_invalidation_of_another_key_does_not_refuse_the_offer(near: NearCache) -> None:
    since = near.generation
    near.invalidate("other")
    offer(near, "k", since=since)
    assert near.lookup("k") == b"v"


def test_an_offer_fetched_before_a_clear_is_refused(near: NearCache) -> None:
    since = near.generation
    near.clear()
    offer(near, "k", since=since)
    assert near.lookup("k") is None
    offer(near, "k", b"fresh")
    assert near.lookup("k") == b"fresh"


def test_invalidation_memory_is_bounded_and_stays_safe(clock: FakeClock) -> None:
    near = NearCache(clock, max_entries=2)
    since = near.generation
    for i in range(9):  # past 4 * max_entries: the near cache clears itself
        near.invalidate(f"k{i}")
    assert len(near._invalidated_at) <= 4 * near.max_entries
    offer(near, "k0", since=since)  # its invalidation record was dropped by the clear
    assert near.lookup("k0") is None
