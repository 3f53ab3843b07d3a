"""CacheShard run directly (no Ray) on a FakeClock.

Concurrency is driven with tasks and ``settle()`` yields; time moves only by
``clock.advance``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from actors.cache.errors import KeyTooLong, LoaderFailed, LoadTimedOut, NotAnInteger, ValueTooLarge
from actors.cache.shard import OWNER_SEPARATOR, CacheShard, check_key, owned_key
from actors.runtime.clock import FakeClock
from actors.runtime.errors import BatchTooLarge, InvalidInput
from actors.runtime.settings import Settings
from tests.unit.conftest import cancel, settle

LEASE_S = 2.0
LOAD_TIMEOUT_S = 30.0
SMALL = {
    "cache_max_entries": 3,
    "cache_max_bytes": 1024,
    "cache_near_lease_s": LEASE_S,
    "cache_load_timeout_s": LOAD_TIMEOUT_S,
    "cache_max_key_bytes": 16,
    "cache_max_value_bytes": 512,
    "cache_max_batch_keys": 4,
}


@pytest.fixture
def make_shard(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> Callable[..., CacheShard]:
    def make(**overrides: Any) -> CacheShard:
        return CacheShard(make_settings(**{**SMALL, **overrides}), clock=clock)

    return make


@pytest.fixture
def shard(make_shard: Callable[..., CacheShard]) -> CacheShard:
    return make_shard()


async def value_of(shard: CacheShard, key: str) -> bytes | None:
    value, _ = await shard.get(key)
    return value


def stored(shard: CacheShard) -> dict[str, bytes]:
    """What the shard holds, read without counting hits or touching the order."""
    return {key: entry.value for key, entry in shard._entries.items()}


# --- basic operations ------------------------------------------------------


async def test_get_set_delete(shard: CacheShard) -> None:
    assert await shard.get("k") == (None, 0.0)
    await shard.set("k", b'"v"')
    assert await shard.get("k") == (b'"v"', 0.0)
    assert await shard.delete("k") is True
    assert await shard.delete("k") is False
    assert await value_of(shard, "k") is None


async def test_set_replaces_a_value(shard: CacheShard) -> None:
    await shard.set("k", b"1")
    await shard.set("k", b"22")
    assert await value_of(shard, "k") == b"22"
    assert (await shard.stats())["bytes"] == len("k") + len("22")


async def test_mset_and_mget(shard: CacheShard) -> None:
    assert await shard.mset([("a", b"1"), ("b", b"2")]) == 2
    assert await shard.mget(["a", "missing", "b"]) == [(b"1", 0.0), (None, 0.0), (b"2", 0.0)]


async def test_incr_counts_a_missing_key_as_zero(shard: CacheShard) -> None:
    assert await shard.incr("n") == 1
    assert await shard.incr("n", 5) == 6
    assert await shard.incr("n", -10) == -4
    assert await value_of(shard, "n") == b"-4"


async def test_incr_keeps_the_ttl(shard: CacheShard, clock: FakeClock) -> None:
    await shard.set("n", b"5", ttl_s=10)
    clock.advance(4)
    assert await shard.incr("n") == 6
    assert await shard.ttl("n") == (True, 6.0)
    clock.advance(6)
    assert await value_of(shard, "n") is None


@pytest.mark.parametrize("value", [b'"text"', b"1.5", b"true", b"false", b"[1]", b"null"])
async def test_incr_refuses_what_is_not_an_integer(shard: CacheShard, value: bytes) -> None:
    await shard.set("k", value)
    with pytest.raises(NotAnInteger):
        await shard.incr("k")
    assert await value_of(shard, "k") == value


# --- TTL -------------------------------------------------------------------


async def test_expired_entry_is_gone_on_read_and_counted(
    shard: CacheShard, clock: FakeClock
) -> None:
    await shard.set("k", b"1", ttl_s=5)
    clock.advance(4.9)
    assert await value_of(shard, "k") == b"1"
    clock.advance(0.1)
    assert await value_of(shard, "k") is None
    stats = await shard.stats()
    assert (stats["expirations"], stats["entries"], stats["bytes"]) == (1, 0, 0)


async def test_sweep_removes_expired_entries_nobody_reads(
    shard: CacheShard, clock: FakeClock
) -> None:
    await shard.set("short", b"1", ttl_s=1)
    await shard.set("long", b"2", ttl_s=10)
    await shard.set("forever", b"3")
    clock.advance(1)
    assert shard.sweep() == 1
    assert stored(shard) == {"long": b"2", "forever": b"3"}
    assert (await shard.stats())["expirations"] == 1


async def test_sweep_skips_an_entry_whose_ttl_was_extended_or_removed(
    shard: CacheShard, clock: FakeClock
) -> None:
    await shard.set("longer", b"1", ttl_s=1)
    await shard.set("persisted", b"2", ttl_s=1)
    assert await shard.expire("longer", 10) is True
    assert await shard.expire("persisted", None) is True
    clock.advance(5)
    assert shard.sweep() == 0
    assert stored(shard) == {"longer": b"1", "persisted": b"2"}


async def test_expire_and_ttl(shard: CacheShard, clock: FakeClock) -> None:
    assert await shard.ttl("k") == (False, None)
    assert await shard.expire("k", 5) is False
    await shard.set("k", b"1")
    assert await shard.ttl("k") == (True, None)
    assert await shard.expire("k", 5) is True
    clock.advance(2)
    assert await shard.ttl("k") == (True, 3.0)
    assert await shard.expire("k", None) is True  # persist
    clock.advance(100)
    assert await shard.ttl("k") == (True, None)


async def test_a_set_without_ttl_clears_the_old_ttl(shard: CacheShard, clock: FakeClock) -> None:
    await shard.set("k", b"1", ttl_s=1)
    await shard.set("k", b"2")
    clock.advance(2)
    shard.sweep()
    assert await value_of(shard, "k") == b"2"


# --- caps and eviction -----------------------------------------------------


async def test_entry_cap_evicts_the_least_recently_used(shard: CacheShard) -> None:
    for key in ("a", "b", "c"):
        await shard.set(key, b"1")
    await shard.get("a")
    await shard.set("d", b"1")
    assert set(stored(shard)) == {"a", "c", "d"}
    assert (await shard.stats())["evictions"] == 1


async def test_entry_cap_evicts_the_least_frequently_used(
    make_shard: Callable[..., CacheShard],
) -> None:
    shard = make_shard(cache_eviction="lfu")
    for key in ("a", "b", "c"):
        await shard.set(key, b"1")
    for key in ("a", "a", "c"):
        await shard.get(key)
    await shard.set("d", b"1")
    assert set(stored(shard)) == {"a", "c", "d"}


async def test_lfu_admits_a_new_key_when_every_entry_is_used_often(
    make_shard: Callable[..., CacheShard],
) -> None:
    shard = make_shard(cache_eviction="lfu")
    for key in ("a", "b", "c"):
        await shard.set(key, b"1")
        await shard.get(key)
    await shard.set("d", b"1")
    assert await value_of(shard, "d") == b"1"
    assert len(stored(shard)) == 3


async def test_byte_cap_evicts_until_the_bytes_fit(shard: CacheShard) -> None:
    big = b"x" * 400  # 401 bytes with its one-letter key; two fit in 1024
    for key in ("a", "b", "c"):
        await shard.set(key, big)
    stats = await shard.stats()
    assert set(stored(shard)) == {"b", "c"}
    assert (stats["bytes"], stats["evictions"]) == (802, 1)


# --- owners ----------------------------------------------------------------


def mine(owner: str, key: str) -> str:
    return owned_key(owner, key)


async def test_each_owner_has_a_keyspace_of_its_own(shard: CacheShard) -> None:
    await shard.set(mine("ann", "k"), b"1")
    await shard.set(mine("bob", "k"), b"2")
    assert await value_of(shard, mine("ann", "k")) == b"1"
    assert await value_of(shard, mine("bob", "k")) == b"2"
    assert await value_of(shard, "k") is None  # nor the deployment's own
    assert await shard.delete(mine("bob", "k"))
    assert await value_of(shard, mine("ann", "k")) == b"1"
    assert await shard.usage("ann") == {"entries": 1, "bytes": len(mine("ann", "k")) + 1}
    assert await shard.usage("bob") == {"entries": 0, "bytes": 0}


async def test_an_owner_over_its_entry_cap_evicts_only_its_own(
    make_shard: Callable[..., CacheShard],
) -> None:
    shard = make_shard(cache_max_entries=100, cache_max_entries_per_owner=3)
    await shard.set(mine("bob", "keep"), b"1")
    for i in range(6):
        await shard.set(mine("ann", f"k{i}"), b"x")
    assert set(stored(shard)) == {mine("bob", "keep")} | {mine("ann", f"k{i}") for i in (3, 4, 5)}
    assert (await shard.stats())["evictions"] == 3


async def test_an_owner_over_its_byte_cap_evicts_only_its_own(
    make_shard: Callable[..., CacheShard],
) -> None:
    shard = make_shard(
        cache_max_entries=100, cache_max_bytes=100_000, cache_max_bytes_per_owner=1024
    )
    await shard.set(mine("bob", "keep"), b"b" * 300)
    for i in range(5):  # about 410 bytes each: two fit in ann's 1024
        await shard.set(mine("ann", f"k{i}"), b"a" * 400)
    assert set(stored(shard)) == {mine("bob", "keep"), mine("ann", "k3"), mine("ann", "k4")}
    assert (await shard.usage("ann"))["bytes"] <= 1024
    with pytest.raises(ValueTooLarge):  # alone larger than an owner may hold
        await shard.set(mine("ann", "huge"), b"x" * 1100)


async def test_a_full_shard_evicts_from_whoever_holds_the_most(
    make_shard: Callable[..., CacheShard],
) -> None:
    # bob holds a little, ann fills the shard: ann's own entries make room, never bob's
    shard = make_shard(cache_max_entries=100, cache_max_bytes=2048, cache_max_value_bytes=512)
    await shard.set(mine("bob", "b1"), b"b" * 100)
    await shard.set(mine("bob", "b2"), b"b" * 100)
    for i in range(10):
        await shard.set(mine("ann", f"k{i}"), b"a" * 400)
    assert {mine("bob", "b1"), mine("bob", "b2")} <= set(stored(shard))
    assert (await shard.stats())["bytes"] <= 2048
    # once bob holds the most, the next to give way is bob's least recently used
    for i in range(4):
        await shard.set(mine("bob", f"c{i}"), b"b" * 400)
    assert mine("bob", "b1") not in stored(shard)
    assert any(key.startswith(mine("ann", "")) for key in stored(shard))


async def test_a_key_may_not_hold_the_owner_separator(shard: CacheShard) -> None:
    with pytest.raises(InvalidInput):
        await shard.set("a" + OWNER_SEPARATOR + "b" + OWNER_SEPARATOR + "c", b"1")
    with pytest.raises(InvalidInput):
        check_key("x" + OWNER_SEPARATOR, shard.config)


# --- limits ----------------------------------------------------------------


async def test_limits_on_keys_values_and_batches(shard: CacheShard) -> None:
    with pytest.raises(KeyTooLong):
        await shard.set("k" * 17, b"1")
    with pytest.raises(ValueTooLarge):
        await shard.set("k", b"x" * 513)
    with pytest.raises(BatchTooLarge):
        await shard.mget(["a", "b", "c", "d", "e"])
    with pytest.raises(BatchTooLarge):
        await shard.mset([(k, b"1") for k in "abcde"])
    await shard.set("k" * 16, b"x" * 512)  # exactly at the limits
    assert stored(shard) == {"k" * 16: b"x" * 512}


@pytest.mark.parametrize(
    "bad, error",
    [(("big", b"x" * 513), ValueTooLarge), (("k" * 17, b"1"), KeyTooLong)],
)
async def test_mset_is_all_or_nothing(
    shard: CacheShard, bad: tuple[str, bytes], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await shard.mset([("a", b"1"), bad, ("b", b"2")])
    assert stored(shard) == {}
    assert (await shard.stats())["sets"] == 0


# --- stats -----------------------------------------------------------------


async def test_stats_count_operations(shard: CacheShard) -> None:
    await shard.set("a", b"1")
    await shard.mset([("b", b"2"), ("c", b"3")])
    await shard.get("a")
    await shard.mget(["b", "nope"])
    await shard.delete("a")
    await shard.delete("a")
    stats = await shard.stats()
    assert {k: stats[k] for k in ("entries", "hits", "misses", "sets", "deletes")} == {
        "entries": 2,
        "hits": 2,
        "misses": 1,
        "sets": 3,
        "deletes": 1,
    }
    assert stats["bytes"] == 4


# --- single flight ---------------------------------------------------------


async def test_load_begin_hits_a_cached_value(shard: CacheShard) -> None:
    await shard.set("k", b"1")
    assert await shard.load_begin("k") == ("hit", b"1")


async def test_concurrent_misses_elect_one_loader(shard: CacheShard) -> None:
    kind, token = await shard.load_begin("k")
    assert kind == "load" and isinstance(token, str)
    waiters = [asyncio.create_task(shard.load_begin("k")) for _ in range(3)]
    await settle()
    assert not any(w.done() for w in waiters)
    assert await shard.load_end("k", token, b"42", None, None) is True
    assert await asyncio.gather(*waiters) == [("hit", b"42")] * 3
    assert await value_of(shard, "k") == b"42"
    assert (await shard.stats())["loads"] == 1


async def test_loaded_value_takes_the_ttl(shard: CacheShard, clock: FakeClock) -> None:
    _, token = await shard.load_begin("k")
    await shard.load_end("k", token, b"1", None, 5)
    assert await shard.ttl("k") == (True, 5.0)


async def test_loader_error_reaches_every_waiter_and_caches_nothing(shard: CacheShard) -> None:
    _, token = await shard.load_begin("k")
    waiters = [asyncio.create_task(shard.load_begin("k")) for _ in range(3)]
    await settle()
    await shard.load_end("k", token, None, "ValueError: boom", None)
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LoaderFailed) for r in results), results
    assert "boom" in str(results[0])
    assert await value_of(shard, "k") is None
    assert (await shard.stats())["load_errors"] == 1
    kind, _ = await shard.load_begin("k")
    assert kind == "load"  # the next miss loads again


async def test_a_load_past_its_timeout_fails_waiters_and_hands_over(
    shard: CacheShard, clock: FakeClock
) -> None:
    _, stale_token = await shard.load_begin("k")
    waiters = [asyncio.create_task(shard.load_begin("k")) for _ in range(2)]
    await settle()
    clock.advance(LOAD_TIMEOUT_S - 1)
    await settle()
    assert not any(w.done() for w in waiters)
    clock.advance(1)
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LoadTimedOut) for r in results), results
    kind, token = await shard.load_begin("k")
    assert (kind, token != stale_token) == ("load", True)
    assert await shard.load_end("k", stale_token, b"old", None, None) is False
    assert await value_of(shard, "k") is None
    assert await shard.load_end("k", token, b"new", None, None) is True
    assert await value_of(shard, "k") == b"new"


@pytest.mark.parametrize("write", ["set", "delete", "incr"])
async def test_a_write_during_a_load_wins_over_the_loaded_value(
    shard: CacheShard, write: str
) -> None:
    _, token = await shard.load_begin("k")
    waiter = asyncio.create_task(shard.load_begin("k"))
    await settle()
    if write == "set":
        await shard.set("k", b"7")
    elif write == "delete":
        await shard.delete("k")
    else:
        await shard.incr("k", 7)
    assert await shard.load_end("k", token, b"loaded", None, None) is True
    assert await waiter == ("hit", b"loaded")
    assert await value_of(shard, "k") == (None if write == "delete" else b"7")


# --- near-cache coherence --------------------------------------------------


async def test_a_follower_read_grants_a_lease(shard: CacheShard) -> None:
    await shard.set("k", b"1")
    assert await shard.get("k", "f") == (b"1", LEASE_S)
    assert await shard.mget(["k", "nope"], "f") == [(b"1", LEASE_S), (None, 0.0)]
    assert (await shard.stats())["near_followers"] == 1


async def test_the_lease_ends_with_the_entry(shard: CacheShard) -> None:
    await shard.set("k", b"1", ttl_s=0.5)
    assert await shard.get("k", "f") == (b"1", 0.5)


async def held(shard: CacheShard, key: str = "k", follower: str = "f") -> None:
    """``follower`` holds ``key`` under a lease."""
    await shard.set(key, b"old")
    await shard.get(key, follower)


async def test_a_write_waits_for_the_holder_to_acknowledge(shard: CacheShard) -> None:
    await held(shard)
    writer = asyncio.create_task(shard.set("k", b"new"))
    await settle()
    assert not writer.done()
    incarnation, messages = await shard.poll_invalidations("f", 0, None)
    assert (incarnation, messages) == (shard.leases.incarnation, [(1, "k")])
    await settle()
    assert not writer.done()  # received is not acknowledged
    poller = asyncio.create_task(shard.poll_invalidations("f", 1, incarnation))
    await writer
    await cancel(poller)
    assert await value_of(shard, "k") == b"new"
    assert (await shard.stats())["invalidations"] == 1


@pytest.mark.parametrize("write", ["set", "delete", "incr", "expire", "clear"])
async def test_every_write_invalidates_holders(shard: CacheShard, write: str) -> None:
    await shard.set("k", b"1")
    await shard.get("k", "f")
    calls = {
        "set": lambda: shard.set("k", b"2"),
        "delete": lambda: shard.delete("k"),
        "incr": lambda: shard.incr("k"),
        "expire": lambda: shard.expire("k", 60),
        "clear": lambda: shard.clear(),
    }
    writer = asyncio.create_task(calls[write]())
    await settle()
    assert not writer.done()
    incarnation, messages = await shard.poll_invalidations("f", 0, None)
    assert messages == [(1, "k")]
    poller = asyncio.create_task(shard.poll_invalidations("f", 1, incarnation))
    await writer
    await cancel(poller)


async def test_a_silent_holder_delays_a_write_by_at_most_its_lease(
    shard: CacheShard, clock: FakeClock
) -> None:
    await held(shard)
    writer = asyncio.create_task(shard.set("k", b"new"))
    await settle()
    clock.advance(LEASE_S - 0.1)
    await settle()
    assert not writer.done()
    clock.advance(0.1)
    await writer


async def test_a_lease_capped_by_ttl_delays_a_write_only_until_expiry(
    shard: CacheShard, clock: FakeClock
) -> None:
    await shard.set("k", b"1", ttl_s=0.5)
    await shard.get("k", "f")
    writer = asyncio.create_task(shard.set("k", b"2"))
    await settle()
    assert not writer.done()
    clock.advance(0.5)
    await writer


async def test_a_cursor_from_another_incarnation_acknowledges_nothing(
    shard: CacheShard,
) -> None:
    await held(shard)
    writer = asyncio.create_task(shard.set("k", b"new"))
    await settle()
    incarnation, messages = await shard.poll_invalidations("f", 1, "some-older-incarnation")
    assert (incarnation, messages) == (shard.leases.incarnation, [(1, "k")])
    await settle()
    assert not writer.done()
    await shard.forget_follower("f")
    await writer


async def test_forget_follower_releases_writers_and_drops_its_leases(shard: CacheShard) -> None:
    await held(shard, "a")
    await held(shard, "b")
    writer = asyncio.create_task(shard.set("a", b"new"))
    await settle()
    assert not writer.done()
    await shard.forget_follower("f")
    await writer
    await shard.set("b", b"new")  # no lease left on b: answers at once
    assert (await shard.stats())["near_followers"] == 0


async def test_reads_without_a_follower_hold_no_lease(shard: CacheShard) -> None:
    await shard.set("k", b"1")
    await shard.get("k")
    await shard.set("k", b"2")
    assert (await shard.stats())["invalidations"] == 0


async def test_a_restarted_shard_takes_writes_only_after_one_lease(
    shard: CacheShard, clock: FakeClock
) -> None:
    shard.leases.hold_writes()  # what a restarted shard process does
    writers = [
        asyncio.create_task(shard.set("k", b"1")),
        asyncio.create_task(shard.delete("k")),
        asyncio.create_task(shard.incr("n")),
    ]
    await settle()
    clock.advance(LEASE_S - 0.1)
    await settle()
    assert not any(w.done() for w in writers)
    assert await value_of(shard, "k") is None
    clock.advance(0.1)
    await asyncio.gather(*writers)
    assert await value_of(shard, "n") == b"1"
