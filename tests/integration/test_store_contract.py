"""One contract, both stores: SQLite (embedded) and Redis (clusters), for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from actors.runtime.errors import JournalConflict, RecordUndecodable, StoreUnavailable
from actors.runtime.journal import Durable
from actors.runtime.store import RedisStore, SQLiteStore, Store, open_store
from tests.conftest import REDIS_URL
from tests.integration.conftest import store_overrides


@pytest.fixture
async def store(store_kind, make_settings) -> AsyncIterator[Store]:
    settings = make_settings(**store_overrides(store_kind))
    opened = open_store(settings, "contract")
    yield opened
    await opened.close()
    if store_kind == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{settings.store_prefix}:*"))
        if keys:
            client.delete(*keys)


async def test_open_store_follows_settings(make_settings):
    sqlite = open_store(make_settings(store_url=""), "queue-a/b")
    assert isinstance(sqlite, SQLiteStore)
    assert sqlite.path.name == "queue-a%2fb.sqlite3"  # a file of its own, whatever the name
    assert isinstance(open_store(make_settings(store_url=REDIS_URL), "queue-a"), RedisStore)


async def test_a_new_stream_is_empty(store):
    assert await store.head("s") == 0
    assert await store.read("s") == []
    assert await store.read_snapshot("s") is None


async def test_append_numbers_records_in_order(store):
    assert await store.append("s", 0, [b"a", b"b"]) == 2
    assert await store.append("s", 2, [b"c"]) == 3
    assert await store.read("s") == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert await store.read("s", after=2) == [(3, b"c")]
    assert await store.head("s") == 3


async def test_streams_are_separate(store):
    await store.append("s1", 0, [b"one"])
    await store.append("s2", 0, [b"two"])
    assert await store.read("s1") == [(1, b"one")]
    assert await store.read("s2") == [(1, b"two")]


async def test_append_with_a_stale_head_is_refused_and_writes_nothing(store):
    await store.append("s", 0, [b"a", b"b"])
    with pytest.raises(JournalConflict) as caught:
        await store.append("s", 1, [b"x", b"y", b"z"])
    assert caught.value.details == {"stream": "s", "expected": 1, "found": 2}
    assert await store.read("s") == [(1, b"a"), (2, b"b")]


async def test_concurrent_writers_cannot_both_win(store):
    results = await asyncio.gather(
        *(store.append("s", 0, [f"w{i}".encode()]) for i in range(5)), return_exceptions=True
    )
    winners = [r for r in results if r == 1]
    assert len(winners) == 1
    assert all(isinstance(r, JournalConflict) for r in results if r != 1)
    assert len(await store.read("s")) == 1


async def test_snapshot_replaces_the_records_it_covers(store):
    await store.append("s", 0, [b"a", b"b", b"c"])
    await store.write_snapshot("s", 2, b"state@2")
    assert await store.read_snapshot("s") == (2, b"state@2")
    assert await store.read("s") == [(3, b"c")]
    # The head does not move back: the next append still continues from 3.
    assert await store.append("s", 3, [b"d"]) == 4


async def test_an_older_snapshot_never_replaces_a_newer_one(store):
    await store.append("s", 0, [b"a", b"b", b"c"])
    await store.write_snapshot("s", 3, b"state@3")
    await store.write_snapshot("s", 1, b"state@1")
    assert await store.read_snapshot("s") == (3, b"state@3")


async def test_binary_records_round_trip(store):
    blob = bytes(range(256)) * 64
    await store.append("s", 0, [blob, b""])
    assert await store.read("s") == [(1, blob), (2, b"")]


async def test_counters(store):
    assert await store.incr("c") == 1
    assert await store.incr("c", 5) == 6
    assert await store.incr("other") == 1


async def test_delete_stream_forgets_everything(store):
    await store.append("s", 0, [b"a", b"b"])
    await store.write_snapshot("s", 1, b"x")
    await store.delete_stream("s")
    assert await store.head("s") == 0
    assert await store.read("s") == []
    assert await store.read_snapshot("s") is None
    assert await store.append("s", 0, [b"new"]) == 1


async def test_an_unreachable_redis_is_store_unavailable():
    store = RedisStore("redis://127.0.0.1:1/0", prefix="nowhere")
    with pytest.raises(StoreUnavailable):
        await store.append("s", 0, [b"a"])
    await store.close()


class _Ledger(Durable):
    """The smallest durable state with a typed record: named amounts."""

    def __init__(self) -> None:
        self.amounts: dict[str, tuple[int, str]] = {}

    def snapshot_state(self) -> dict[str, tuple[int, str]]:
        return self.amounts

    def restore_state(self, state: dict[str, tuple[int, str]]) -> None:
        self.amounts = state

    def apply_set(self, name: str, amount: tuple[int, str]) -> tuple[int, str]:
        self.amounts[name] = amount
        return amount


async def test_durable_state_round_trips_as_data_and_undecodable_records_are_named(store):
    first = _Ledger()
    await first.open(store, "ledger-contract", snapshot_every=2)
    for i in range(3):
        await first.execute("set", name=f"n{i}", amount=(i, "eur"))
    await first._snapshot_task
    again = _Ledger()
    await again.open(store, "ledger-contract")
    assert again.amounts == {f"n{i}": (i, "eur") for i in range(3)}
    await store.append("ledger-contract", 3, [b"\x80\x04\x95 a pickle, not a record"])
    with pytest.raises(RecordUndecodable) as refused:
        await _Ledger().open(store, "ledger-contract")
    assert refused.value.details == {"stream": "ledger-contract", "seq": 4}
