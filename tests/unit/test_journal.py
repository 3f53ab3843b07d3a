"""Journal and Durable without Ray, on a real SQLite store in a temp dir."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from actors.runtime.errors import Conflict, JournalConflict, StoreUnavailable
from actors.runtime.journal import Durable
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import settle


class Account(Durable):
    """A tiny durable state: a balance that may not go below zero."""

    def __init__(self) -> None:
        self.balance = 0
        self.failures: list[BaseException] = []

    async def start(self, store: Any, *, snapshot_every: int = 1_000) -> Account:
        await self.open(store, "account", snapshot_every=snapshot_every,
                        on_failure=self.failures.append)  # fmt: skip
        return self

    def snapshot_state(self) -> int:
        return self.balance

    def restore_state(self, state: int) -> None:
        self.balance = state

    def apply_add(self, amount: int) -> int:
        if self.balance + amount < 0:
            raise Conflict("would go negative", balance=self.balance, amount=amount)
        self.balance += amount
        return self.balance


class FlakyStore(SQLiteStore):
    """SQLite that can be told to fail its appends, to hold them until released,
    or to fail its next snapshot writes."""

    fail_next = False
    #: While set, appends wait for it to be set again (cleared: held).
    gate: asyncio.Event | None = None
    snapshot_failures_left = 0

    async def append(self, stream: str, head: int, records: Sequence[bytes]) -> int:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            raise StoreUnavailable("injected")
        return await super().append(stream, head, records)

    async def write_snapshot(self, stream: str, seq: int, data: bytes) -> None:
        if self.snapshot_failures_left:
            self.snapshot_failures_left -= 1
            raise StoreUnavailable("injected snapshot failure")
        await super().write_snapshot(stream, seq, data)

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate


@pytest.fixture
async def store(tmp_path):
    """The conftest's store, but one that can be told to fail."""
    opened = FlakyStore(tmp_path / "j.sqlite3")
    yield opened
    await opened.close()


async def test_state_is_rebuilt_from_the_journal(store):
    account = await Account().start(store)
    for amount in (5, 7, -2):
        await account.execute("add", amount=amount)
    again = await Account().start(store)
    assert again.balance == 10
    assert again.journal.committed == 3


async def test_snapshot_plus_replay_gives_the_same_state(store):
    account = await Account().start(store, snapshot_every=4)
    for i in range(10):
        await account.execute("add", amount=i, key=f"k{i}")
    await account._snapshot_task
    snapshot = await store.read_snapshot("account")
    assert snapshot is not None and snapshot[0] == 8
    assert [seq for seq, _ in await store.read("account")] == [9, 10]
    again = await Account().start(store, snapshot_every=4)
    assert again.balance == sum(range(10))
    # Keys from before the snapshot are remembered too.
    assert await again.execute("add", amount=100, key="k2") == 3
    assert again.balance == 45


async def test_a_large_state_is_snapshotted_at_most_once_per_state_size_records(store):
    class Big(Account):
        size = 6

        def state_size(self) -> int:
            return self.size

    account = await Big().start(store, snapshot_every=2)
    taken = []
    for _ in range(13):
        await account.execute("add", amount=1)
        if account._snapshot_seq not in taken and account._snapshot_seq:
            taken.append(account._snapshot_seq)
    assert taken == [6, 12]  # every 6 records, not every 2
    await account._snapshot_task
    assert (await Big().start(store)).balance == 13


async def test_recorded_operations_are_journaled_without_being_awaited(store):
    account = await Account().start(store)
    result, committed = account.record("add", amount=4)
    assert result == 4 and account.balance == 4 and not committed.done()
    assert await committed == 1
    assert (await Account().start(store)).balance == 4


async def test_a_repeated_key_is_applied_once_with_the_first_answer(store):
    account = await Account().start(store)
    first = await account.execute("add", amount=5, key="once")
    repeat = await account.execute("add", amount=5, key="once")
    assert first == repeat == 5
    assert account.balance == 5
    assert len(await store.read("account")) == 1


async def test_concurrent_repeats_of_one_key_share_the_first_call(store):
    account = await Account().start(store)
    answers = await asyncio.gather(*(account.execute("add", amount=3, key="k") for _ in range(5)))
    assert answers == [3] * 5
    assert account.balance == 3


async def test_a_refused_operation_changes_nothing_and_is_not_journaled(store):
    account = await Account().start(store)
    await account.execute("add", amount=1)
    with pytest.raises(Conflict):
        await account.execute("add", amount=-5, key="refused")
    assert account.balance == 1
    assert len(await store.read("account")) == 1
    # A refusal is not remembered: the same key may succeed later.
    await account.execute("add", amount=10)
    assert await account.execute("add", amount=-5, key="refused") == 6


async def test_concurrent_writes_are_group_committed(store):
    account = await Account().start(store)
    await asyncio.gather(*(account.execute("add", amount=1) for _ in range(200)))
    assert account.balance == 200
    assert account.journal.records == 200
    assert account.journal.commits < 20


async def test_a_failed_commit_fails_its_callers_and_breaks_the_journal(store):
    account = await Account().start(store)
    await account.execute("add", amount=1)
    store.fail_next = True
    results = await asyncio.gather(
        *(account.execute("add", amount=1) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert len(account.failures) == 1  # the actor would now crash and recover
    with pytest.raises(StoreUnavailable):
        await account.execute("add", amount=1)
    store.fail_next = False
    recovered = await Account().start(store)
    assert recovered.balance == 1


async def test_a_stale_incarnation_cannot_write_after_its_successor(store):
    old = await Account().start(store)
    new = await Account().start(store)
    await new.execute("add", amount=1)
    with pytest.raises(JournalConflict):
        await old.execute("add", amount=1)
    assert (await Account().start(store)).balance == 1


async def test_a_repeat_waits_for_the_first_commit_and_fails_if_it_fails(store):
    # Given a keyed write whose commit is still on its way to the store
    account = await Account().start(store)
    released = store.hold()
    first = asyncio.ensure_future(account.execute("add", amount=5, key="once"))
    await settle()
    assert account.balance == 5 and not first.done()

    # When the same key comes again (a client's or Ray's retry)
    repeat = asyncio.ensure_future(account.execute("add", amount=5, key="once"))
    await settle()

    # Then it is not answered from memory before the first one is committed
    assert not repeat.done()
    assert account.reply("once") is None and account.knows("once")
    # and when that commit fails, the repeat fails too: no success for a lost write
    store.fail_next = True
    released.set()
    for call in (first, repeat):
        with pytest.raises(StoreUnavailable):
            await call
    assert account.reply("once") is None
    with pytest.raises(StoreUnavailable):
        await account.committed_reply("once")
    with pytest.raises(StoreUnavailable):
        await account.execute("add", amount=5, key="once")
    store.fail_next = False
    assert (await Account().start(store)).balance == 0


async def test_a_repeat_of_a_committed_key_answers_once_the_commit_lands(store):
    account = await Account().start(store)
    released = store.hold()
    first = asyncio.ensure_future(account.execute("add", amount=3, key="k"))
    await settle()
    repeat = asyncio.ensure_future(account.execute("add", amount=3, key="k"))
    await settle()
    assert not repeat.done()
    released.set()
    assert await first == await repeat == 3
    assert account.reply("k") == ("add", 3)
    assert await account.committed_reply("k") == ("add", 3)
    assert account.balance == 3


async def test_nothing_is_applied_once_the_journal_is_broken(store):
    account = await Account().start(store)
    store.fail_next = True
    with pytest.raises(StoreUnavailable):
        await account.execute("add", amount=1)
    # A call after the failure is refused before it changes anything, so its
    # key is not remembered as if it had succeeded.
    with pytest.raises(StoreUnavailable):
        account.record("add", amount=2, key="late")
    assert account.balance == 1 and account.reply("late") is None
    with pytest.raises(StoreUnavailable):
        await account.execute("add", amount=2, key="late")


async def test_after_commit_answers_a_read_once_what_it_shows_is_durable(store):
    account = await Account().start(store)
    released = store.hold()
    account.record("add", amount=4)
    read = asyncio.ensure_future(account.after_commit(account.balance))
    await settle()
    assert not read.done()
    released.set()
    assert await read == 4


async def test_a_failed_snapshot_does_not_stop_the_next_ones(store):
    # Given a store that fails one snapshot write
    account = await Account().start(store, snapshot_every=4)
    store.snapshot_failures_left = 1
    for i in range(4):
        await account.execute("add", amount=1, key=f"k{i}")
    await asyncio.wait({account._snapshot_task})
    assert await store.read_snapshot("account") is None
    assert len(await store.read("account")) == 4  # nothing trimmed

    # When more records come
    for i in range(4, 9):
        await account.execute("add", amount=1, key=f"k{i}")
    await asyncio.wait({account._snapshot_task})

    # Then the next snapshot is written and the journal trimmed again
    snapshot = await store.read_snapshot("account")
    assert snapshot is not None and snapshot[0] == 8
    assert [seq for seq, _ in await store.read("account")] == [9]
    assert account.snapshot_failures == 1  # the failure was counted (and logged)
    again = await Account().start(store, snapshot_every=4)
    assert again.balance == 9
    assert await again.execute("add", amount=1, key="k1") == 2  # keys survive too
