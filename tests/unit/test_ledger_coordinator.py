"""TxCoordinator run directly (no Ray) over two in-process LedgerShards, a
FakeClock and a real SQLite store: the 2PC state machine, its refusals and
idempotency, and recovery decisions after a coordinator "crash" (a second
coordinator opened on the same log while the first is stuck mid-transaction)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.ledger.coordinator import RemoteShard, TxCoordinator, TxState, legs_of
from actors.ledger.errors import (
    IdConflict,
    InsufficientFunds,
    LedgerMismatch,
    LinkedEventFailed,
    PendingTransferClosed,
)
from actors.ledger.model import MAX_BALANCE, AccountSpec, Kind, TransferSpec, unit_outcomes
from actors.ledger.shard import LedgerShard
from actors.runtime.clock import FakeClock
from actors.runtime.errors import LimitReached, Unavailable
from actors.runtime.store import SQLiteStore
from tests.conftest import until
from tests.unit.test_ledger import stopped


def route(account_id: str) -> int:
    """Accounts named a... live on shard 0, b... on shard 1."""
    return 0 if account_id.startswith("a") else 1


class Port:
    """A shard as the coordinator sees it, with faults on demand: a method can
    be held (it waits until released) or made to fail."""

    def __init__(self, shard: LedgerShard) -> None:
        self.shard = shard
        self.hold: dict[str, asyncio.Event] = {}
        self.fail: set[str] = set()
        self.calls: list[str] = []

    async def _call(self, method: str, arg: Any) -> Any:
        self.calls.append(method)
        if method in self.hold:
            await self.hold[method].wait()
        if method in self.fail:
            raise ConnectionError(f"{method} lost")
        return await getattr(self.shard, method)(arg)

    async def prepare(self, items: Any) -> Any:
        return await self._call("prepare", items)

    async def commit(self, txids: Any) -> Any:
        return await self._call("commit", txids)

    async def abort(self, txids: Any) -> Any:
        return await self._call("abort", txids)

    async def in_doubt(self, older_than_s: float = 0.0) -> Any:
        return await self._call("in_doubt", older_than_s)

    async def census(self, owner: str, ids: list[str]) -> Any:
        self.calls.append("census")
        return await self.shard.census(owner, ids)

    async def create_accounts(self, specs: Any) -> Any:
        return await self._call("create_accounts", specs)


@pytest.fixture
async def shards(clock: FakeClock, store: SQLiteStore) -> list[LedgerShard]:
    made = []
    for i in range(2):
        shard = LedgerShard(clock=clock, name=f"s{i}")
        await shard.open(store, f"s{i}", on_failure=lambda e: None)
        made.append(shard)
    accounts = [
        AccountSpec("a-bank", 1),
        AccountSpec("a-alice", 1, debits_must_not_exceed_credits=True),
        AccountSpec("b-bob", 1, debits_must_not_exceed_credits=True),
        AccountSpec("b-bank", 1),
        AccountSpec("b-euro", 2),
    ]
    for spec in accounts:
        await made[route(spec.id)].create_accounts([spec])
    return made


@pytest.fixture
def ports(shards: list[LedgerShard]) -> list[Port]:
    return [Port(shard) for shard in shards]


async def open_coordinator(
    ports: list[Port],
    store: SQLiteStore,
    clock: FakeClock,
    *,
    recover: bool = True,
    snapshot_every: int = 10_000,
) -> TxCoordinator:
    coordinator = TxCoordinator("c0", ports, route, clock=clock)
    await coordinator.open(store, "c0", snapshot_every=snapshot_every, on_failure=lambda e: None)
    if recover:
        await coordinator.recover()
    return coordinator


@pytest.fixture
async def coordinator(ports, store, clock) -> TxCoordinator:
    return await open_coordinator(ports, store, clock)


def t(id: str, debit: str, credit: str, amount: int, **kw: Any) -> TransferSpec:
    return TransferSpec(id, debit, credit, amount, kw.pop("ledger", 1), **kw)


async def run(coordinator: TxCoordinator, *unit: TransferSpec) -> list[Any]:
    (result,) = await coordinator.run([list(unit)])
    return unit_outcomes(list(unit), result)


async def balances(shards: list[LedgerShard], account_id: str) -> tuple[int, int, int, int]:
    (a,) = await shards[route(account_id)].get_accounts([account_id])
    return a["debits_pending"], a["debits_posted"], a["credits_pending"], a["credits_posted"]


async def fund_alice(coordinator: TxCoordinator, amount: int) -> None:
    (answer,) = await run(coordinator, t(f"fund-{amount}", "b-bank", "a-alice", amount))
    assert not isinstance(answer, Exception), answer


def test_legs_split_a_transfer_across_shards_or_keep_it_whole():
    unit = [t("x", "a-1", "b-1", 5, linked=True), t("y", "a-1", "a-2", 5)]
    legs = legs_of(unit, route)
    assert [(i, sides) for i, _, sides in legs[0]] == [(0, ("debit",)), (1, ("debit", "credit"))]
    assert [(i, sides) for i, _, sides in legs[1]] == [(0, ("credit",))]


async def test_a_cross_shard_transfer_commits_on_both_and_answers_both_balances(
    coordinator, shards
):
    await fund_alice(coordinator, 100)
    (answer,) = await run(coordinator, t("x1", "a-alice", "b-bob", 40))
    assert answer["debit_account"]["id"] == "a-alice"
    assert answer["debit_account"]["debits_posted"] == 40
    assert answer["credit_account"]["credits_posted"] == 40
    assert answer["transfer"]["state"] == "posted"
    assert await balances(shards, "a-alice") == (0, 40, 0, 100)
    assert await balances(shards, "b-bob") == (0, 0, 0, 40)
    assert coordinator.entries["x1"].state is TxState.COMMITTED
    assert [await s.in_doubt() for s in shards] == [[], []]


async def test_a_refusal_on_one_shard_aborts_and_releases_the_other(coordinator, shards, ports):
    await fund_alice(coordinator, 10)
    (refused,) = await run(coordinator, t("x1", "b-bob", "a-alice", 5))
    assert isinstance(refused, InsufficientFunds)
    assert refused.details["account_id"] == "b-bob"
    assert await balances(shards, "a-alice") == (0, 0, 0, 10)  # its credit reservation released
    assert "abort" in ports[0].calls and "abort" in ports[1].calls
    (mismatch,) = await run(coordinator, t("x2", "a-alice", "b-euro", 5))
    assert isinstance(mismatch, LedgerMismatch)
    assert await balances(shards, "a-alice") == (0, 0, 0, 10)
    # refusals are not final: once bob has money the same transfer goes through
    await run(coordinator, t("fund-bob", "a-bank", "b-bob", 5))
    (answer,) = await run(coordinator, t("x1", "b-bob", "a-alice", 5))
    assert answer["credit_account"]["credits_posted"] == 15


async def test_the_same_unit_answers_the_first_result_and_another_body_conflicts(
    coordinator, shards
):
    await fund_alice(coordinator, 100)
    first = await run(coordinator, t("x1", "a-alice", "b-bob", 40))
    await run(coordinator, t("x2", "a-alice", "b-bob", 1))
    assert await run(coordinator, t("x1", "a-alice", "b-bob", 40)) == first
    (conflict,) = await run(coordinator, t("x1", "a-alice", "b-bob", 41))
    assert isinstance(conflict, IdConflict)
    assert await balances(shards, "b-bob") == (0, 0, 0, 41)
    # concurrent repeats of one unit apply it once
    unit = t("x3", "a-alice", "b-bob", 2)
    answers = await asyncio.gather(*(run(coordinator, unit) for _ in range(5)))
    assert all(a == answers[0] for a in answers)
    assert await balances(shards, "b-bob") == (0, 0, 0, 43)


async def test_a_linked_chain_across_shards_is_all_or_nothing(coordinator, shards):
    await fund_alice(coordinator, 10)
    chain = [
        t("c1", "a-alice", "b-bob", 10, linked=True),
        t("c2", "b-bob", "a-bank", 10, linked=True),
        t("c3", "b-bob", "a-bank", 1),
    ]
    first, second, third = await run(coordinator, *chain)
    assert isinstance(first, LinkedEventFailed) and isinstance(second, LinkedEventFailed)
    assert isinstance(third, InsufficientFunds)
    for account in ("a-alice", "b-bob", "a-bank"):
        assert (await balances(shards, account))[0::2] == (0, 0)  # nothing left reserved
    assert await balances(shards, "b-bob") == (0, 0, 0, 0)
    answers = await run(coordinator, *chain[:2], t("c3", "a-bank", "b-bob", 1))
    assert [a["transfer"]["id"] for a in answers] == ["c1", "c2", "c3"]
    assert await balances(shards, "b-bob") == (0, 10, 0, 11)


async def test_cross_shard_pending_post_void_and_timeout(coordinator, shards, clock):
    await fund_alice(coordinator, 100)
    await run(coordinator, t("p1", "a-alice", "b-bob", 30, kind=Kind.PENDING))
    assert await balances(shards, "a-alice") == (30, 0, 0, 100)
    assert await balances(shards, "b-bob") == (0, 0, 30, 0)
    (posted,) = await run(
        coordinator, t("post1", "a-alice", "b-bob", 20, kind=Kind.POST, pending_id="p1")
    )
    assert posted["credit_account"]["credits_posted"] == 20
    assert await balances(shards, "a-alice") == (0, 20, 0, 100)
    (again,) = await run(
        coordinator, t("void1", "a-alice", "b-bob", 30, kind=Kind.VOID, pending_id="p1")
    )
    assert isinstance(again, PendingTransferClosed)

    # a pending transfer with a timeout is voided by the coordinator that made it
    await run(coordinator, t("p2", "a-alice", "b-bob", 50, kind=Kind.PENDING, timeout_s=30))
    clock.advance(29)
    assert await coordinator.expire_due() == []
    clock.advance(2)
    assert await coordinator.expire_due() == ["p2"]
    assert await balances(shards, "a-alice") == (0, 20, 0, 100)
    assert await balances(shards, "b-bob") == (0, 0, 0, 20)
    for shard in shards:
        assert (await shard.get_transfers(["p2"]))[0]["state"] == "expired"
    assert coordinator.expiring == {}


# --- recovery -------------------------------------------------------------------------


async def test_presumed_abort_when_the_coordinator_dies_before_deciding(
    ports, store, clock, shards
):
    # Given a transaction prepared on shard 0 while shard 1's prepare hangs
    first = await open_coordinator(ports, store, clock)
    await fund_alice(first, 100)
    ports[1].hold["prepare"] = asyncio.Event()
    stuck = asyncio.ensure_future(first.run([[t("x1", "a-alice", "b-bob", 40)]]))
    await until(lambda: shards[0].in_doubt())
    assert await balances(shards, "a-alice") == (40, 0, 0, 100)
    assert first.entries["x1"].state is TxState.PREPARING

    # When the coordinator restarts (a new one on the same log)
    await stopped(first)
    ports[1].hold.clear()
    again = await open_coordinator(ports, store, clock)
    await asyncio.gather(*again._drivers.values())

    # Then it aborted the undecided transaction everywhere (presumed abort)
    assert "x1" not in again.entries  # only commit decisions are logged
    assert await balances(shards, "a-alice") == (0, 0, 0, 100)
    assert await shards[0].in_doubt() == []
    # and a retry of the same transfer (Ray retries calls in flight) runs anew, once
    (answer,) = await run(again, t("x1", "a-alice", "b-bob", 40))
    assert answer["credit_account"]["credits_posted"] == 40
    assert await balances(shards, "a-alice") == (0, 40, 0, 100)
    stuck.cancel()


async def test_commit_after_restart_once_the_decision_is_logged(ports, store, clock, shards):
    # Given a commit decision logged while shard 1's commit hangs
    first = await open_coordinator(ports, store, clock)
    await fund_alice(first, 100)
    ports[1].calls.clear()
    ports[1].hold["commit"] = asyncio.Event()
    stuck = asyncio.ensure_future(first.run([[t("x1", "a-alice", "b-bob", 40)]]))
    await until(lambda: "commit" in ports[1].calls)
    assert first.entries["x1"].state is TxState.COMMITTING

    # When the coordinator restarts
    await stopped(first)
    ports[1].hold.clear()
    again = await open_coordinator(ports, store, clock)
    await asyncio.gather(*again._drivers.values())

    # Then the transfer is committed on both shards, exactly once
    assert again.entries["x1"].state is TxState.COMMITTED
    assert await balances(shards, "a-alice") == (0, 40, 0, 100)
    assert await balances(shards, "b-bob") == (0, 0, 0, 40)
    (answer,) = await run(again, t("x1", "a-alice", "b-bob", 40))
    assert answer["credit_account"]["credits_posted"] == 40
    assert await balances(shards, "b-bob") == (0, 0, 0, 40)
    stuck.cancel()


async def test_an_unreachable_shard_leaves_the_outcome_to_the_sweep(
    coordinator, ports, shards, clock
):
    await fund_alice(coordinator, 100)
    ports[1].fail.add("commit")
    task = asyncio.ensure_future(run(coordinator, t("x1", "a-alice", "b-bob", 40)))
    for _ in range(500):  # the driver backs off on the fake clock
        if task.done():
            break
        await asyncio.sleep(0.01)
        clock.advance(5)
    (unknown,) = await task
    assert isinstance(unknown, Unavailable)  # the caller cannot know yet...
    assert coordinator.entries["x1"].state is TxState.COMMITTING
    ports[1].fail.clear()
    assert coordinator.sweep() == 1  # ...and the sweep finishes it
    await asyncio.gather(*coordinator._drivers.values())
    assert await balances(shards, "b-bob") == (0, 0, 0, 40)


async def test_a_shard_in_doubt_learns_the_outcome_from_the_coordinator(coordinator, ports, shards):
    await fund_alice(coordinator, 100)
    ports[1].calls.clear()
    ports[0].hold["commit"] = asyncio.Event()
    ports[1].hold["commit"] = asyncio.Event()
    task = asyncio.ensure_future(run(coordinator, t("x1", "a-alice", "b-bob", 40)))
    await until(lambda: "commit" in ports[1].calls)
    ((txid, name),) = await shards[1].in_doubt()
    assert name == "c0"
    assert await coordinator.resolve([txid, "x9#unknown", "x1#older-attempt"]) == [
        "commit",
        "abort",
        "abort",
    ]
    await shards[1].commit([txid])  # what the shard actor does with "commit"
    for port in ports:
        port.hold["commit"].set()
    (answer,) = await task
    assert answer["credit_account"]["credits_posted"] == 40
    assert await balances(shards, "b-bob") == (0, 0, 0, 40)


async def test_a_snapshot_keeps_unfinished_decisions_and_shards_answer_finished_ones(
    ports, store, clock, shards
):
    # Given committed transactions, one answering a balance at the 128-bit edge
    # (beyond what MessagePack's integers hold), a pending one with a timeout, a
    # decision shard 1 has not acknowledged yet (its commit hangs), and a snapshot
    first = await open_coordinator(ports, store, clock, snapshot_every=1)
    await fund_alice(first, 100)
    shards[1].books.accounts["b-bob"].credits_posted = MAX_BALANCE - 41  # out of reach otherwise
    (answer,) = await run(first, t("x1", "a-alice", "b-bob", 40))
    assert answer["credit_account"]["credits_posted"] == MAX_BALANCE - 1
    await run(first, t("p1", "a-alice", "b-bank", 5, kind=Kind.PENDING, timeout_s=30))
    ports[1].calls.clear()
    ports[1].hold["commit"] = asyncio.Event()
    stuck = asyncio.ensure_future(first.run([[t("x2", "a-alice", "b-bob", 1)]]))
    await until(lambda: "commit" in ports[1].calls)
    first.record("expired", pending_id="none")  # one more record: a snapshot after x2's decision
    await stopped(first)
    assert await store.read_snapshot("c0") is not None

    # When the coordinator is opened again from the store
    ports[1].hold.clear()
    again = await open_coordinator(ports, store, clock, snapshot_every=1, recover=False)

    # Then the snapshot brought back the unfinished decision and the timeouts, and
    # no finished one
    assert list(again.entries) == ["x2"]
    restored, entry = again.entries["x2"], first.entries["x2"]
    assert (restored.unit, restored.txid, restored.state) == (entry.unit, entry.txid,
                                                               TxState.COMMITTING)  # fmt: skip
    assert again.expiring == first.expiring
    # and the unfinished one is driven to its end
    await again.recover()
    await asyncio.gather(*again._drivers.values())
    assert await balances(shards, "b-bob") == (0, 0, 0, MAX_BALANCE)
    # and a repeat of a forgotten one answers as the first did, from the shards,
    # changing nothing
    assert await run(again, t("x1", "a-alice", "b-bob", 40)) == [answer]
    assert await balances(shards, "b-bob") == (0, 0, 0, MAX_BALANCE)
    assert await balances(shards, "a-alice") == (5, 41, 0, 100)
    assert not shards[0].prepared and not shards[1].prepared
    stuck.cancel()


async def test_a_repeat_of_a_forgotten_unit_answers_its_result_and_changes_nothing(
    ports, store, clock, shards
):
    # Given a coordinator that keeps no finished transaction, and a linked
    # chain it committed across both shards
    coordinator = TxCoordinator("c0", ports, route, clock=clock, finished_kept=0)
    await coordinator.open(store, "c0", on_failure=lambda e: None)
    await fund_alice(coordinator, 100)
    chain = [t("c1", "a-alice", "b-bob", 30, linked=True), t("c2", "b-bob", "b-bank", 10)]
    first = await run(coordinator, *chain)
    assert "c1" not in coordinator.entries  # forgotten

    # When the chain is sent again
    again = await run(coordinator, *chain)

    # Then it answers as it did the first time, and nothing moved
    assert again == first
    assert await balances(shards, "a-alice") == (0, 30, 0, 100)
    assert await balances(shards, "b-bob") == (0, 10, 0, 30)
    assert not shards[0].prepared and not shards[1].prepared
    # and another body under the same id still conflicts
    (conflict, _) = await run(coordinator, t("c1", "a-alice", "b-bob", 31, linked=True), chain[1])
    assert isinstance(conflict, IdConflict)


async def test_a_unit_only_part_of_which_exists_is_refused_and_changes_nothing(
    ports, store, clock, shards
):
    # Given a forgotten transfer committed on shard 0 alone
    coordinator = TxCoordinator("c0", ports, route, clock=clock, finished_kept=0)
    await coordinator.open(store, "c0", on_failure=lambda e: None)
    await fund_alice(coordinator, 100)
    done = t("d1", "a-alice", "a-bank", 7)
    await run(coordinator, done)

    # When a chain with a new transfer on shard 1 ends with that same transfer
    fresh = t("n1", "b-bank", "b-bob", 5, linked=True)
    answers = await run(coordinator, fresh, done)

    # Then the chain is refused at the transfer that exists, and the fresh part was released
    assert isinstance(answers[0], LinkedEventFailed)
    assert isinstance(answers[1], IdConflict) and answers[1].details["id"] == "d1"
    assert await balances(shards, "b-bob") == (0, 0, 0, 0)
    assert await balances(shards, "a-bank") == (0, 0, 0, 7)
    assert not shards[0].prepared and not shards[1].prepared
    assert (await shards[1].get_transfers(["n1"])) == [None]


class BreakableStore:
    """A store whose appends start failing on demand (a shard dying before its
    journal record reached the store)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(self, stream: str, expected: int, records: list[bytes]) -> int:
        if self.broken:
            raise ConnectionError("the store is gone")
        return await self.store.append(stream, expected, records)


async def drive_until_done(task: asyncio.Future[Any], clock: FakeClock) -> Any:
    """Run ``task`` while moving the fake clock (the driver backs off on it)."""
    for _ in range(500):
        if task.done():
            break
        await asyncio.sleep(0.01)
        clock.advance(5)
    return await task


async def test_a_shard_that_lost_its_commit_record_is_told_commit_however_late(
    shards, store, clock
):
    # Given shard 1 on a store that loses its writes, and a cross-shard transfer
    # whose commit is applied there but never reaches the store
    breakable = BreakableStore(store)
    bob_shard = LedgerShard(clock=clock, name="s1x")
    await bob_shard.open(breakable, "s1x", on_failure=lambda e: None)  # type: ignore[arg-type]
    await bob_shard.create_accounts([AccountSpec("b-bob", 1), AccountSpec("b-bank", 1)])
    ports = [Port(shards[0]), Port(bob_shard)]
    coordinator = TxCoordinator("c0", ports, route, clock=clock, finished_kept=1)
    await coordinator.open(store, "c0", on_failure=lambda e: None)
    await fund_alice(coordinator, 100)
    ports[1].calls.clear()
    ports[1].hold["commit"] = asyncio.Event()
    task = asyncio.ensure_future(run(coordinator, t("x1", "a-alice", "b-bob", 40)))
    await until(lambda: "commit" in ports[1].calls)
    breakable.broken = True
    ports[1].hold["commit"].set()

    # Then nobody is told an outcome the shard could still lose: no answer (nor
    # read) shows balances the shard has not stored, and the decision stays
    (unknown,) = await drive_until_done(task, clock)
    assert isinstance(unknown, Unavailable)
    assert coordinator.entries["x1"].state is TxState.COMMITTING
    txid = coordinator.entries["x1"].txid

    # When the shard restarts from what the store has (the transfer prepared),
    # hours pass and many transactions finish (the coordinator forgets old ones)
    again = LedgerShard(clock=clock, name="s1x")
    await again.open(store, "s1x", on_failure=lambda e: None)
    assert await again.in_doubt() == [(txid, "c0")]
    ports[1].shard = again
    clock.advance(3 * 3_600)
    for i in range(5):
        await fund_alice(coordinator, i + 1)
    assert "fund-100" not in coordinator.entries  # finished ones are forgotten...

    # Then the coordinator still answers "commit" to the shard in doubt (never
    # the "abort" of an unknown transaction), and the shard commits it, once
    assert await coordinator.resolve([txid]) == ["commit"]
    await again.commit([txid])
    assert (await again.get_accounts(["b-bob"]))[0]["credits_posted"] == 40
    assert (await again.get_accounts(["b-bob"]))[0]["credits_pending"] == 0
    # and the decision is kept until the coordinator has heard the shard acknowledge it
    assert coordinator.entries["x1"].state is TxState.COMMITTING
    assert coordinator.sweep() == 1
    await asyncio.gather(*coordinator._drivers.values())
    assert coordinator.entries["x1"].state is TxState.COMMITTED

    # and a retry of the transfer answers what the shards show, for good
    (answer,) = await run(coordinator, t("x1", "a-alice", "b-bob", 40))
    (stored,) = await again.get_transfers(["x1"])
    assert answer["credit_account"] == {
        "id": "b-bob", "debits_pending": 0, "debits_posted": 0, "credits_pending": 0,
        "credits_posted": 40,
    }  # fmt: skip
    (entry,) = [e for e in (await again.history_of("b-bob"))["entries"] if e["transfer_id"] == "x1"]
    assert entry["credits_posted"] == 40 and entry["timestamp"] == stored["timestamp"]


async def test_a_read_never_shows_a_commit_the_store_does_not_have_yet(shards, clock):
    # Given a transaction prepared on shard 0 and a store that holds its writes
    bank = shards[0]
    leg = (0, t("x1", "a-bank", "b-bob", 5), ("debit",))
    assert await bank.prepare([("x1#1", "c0", [leg])]) == [None]
    gate = asyncio.Event()
    store = bank.journal.store
    append = store.append

    async def held(*args: Any) -> Any:
        await gate.wait()
        return await append(*args)

    store.append = held  # type: ignore[method-assign]
    try:
        # When the commit is applied but not yet stored
        commit = asyncio.ensure_future(bank.commit(["x1#1"]))
        await until(lambda: bank.books.transfers["x1"].state == "posted")
        reads = [
            asyncio.ensure_future(bank.get_transfers(["x1"])),
            asyncio.ensure_future(bank.get_accounts(["a-bank"])),
            asyncio.ensure_future(bank.history_of("a-bank")),
        ]
        for _ in range(20):
            await asyncio.sleep(0)

        # Then neither the commit nor any read answers before the store has it
        assert not commit.done() and not any(read.done() for read in reads)
        gate.set()
        await commit
        (transfer,), (account,), _ = await asyncio.gather(*reads)
    finally:
        store.append = append  # type: ignore[method-assign]
    assert transfer["state"] == "posted" and account["debits_posted"] == 5


async def test_the_units_of_one_call_share_their_store_writes(coordinator, shards):
    await fund_alice(coordinator, 100)
    await coordinator.journal.drain()  # its finish record is written
    commits, records = coordinator.journal.commits, coordinator.journal.records
    units = [[t(f"x{i}", "a-alice", "b-bob", 1)] for i in range(10)]
    results = await coordinator.run(units)
    assert all(r[0] == "ok" for r in results)
    await coordinator.journal.drain()
    # ten commit decisions and ten finish records in a few store writes, not twenty
    assert coordinator.journal.records - records == 20
    assert coordinator.journal.commits - commits <= 4
    assert await balances(shards, "b-bob") == (0, 0, 0, 10)


class EchoRef:
    """A shard actor's ref that records each call and answers every item."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str]]] = []

    async def call(self, method: str, items: list[str]) -> list[str]:
        self.sent.append((method, items))
        return [f"{method} {item}" for item in items]


async def test_a_remote_shard_sends_what_arrives_in_one_turn_in_one_call():
    ref = EchoRef()
    remote = RemoteShard(ref, max_batch=100)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(remote.commit([f"tx#{i}"]) for i in range(5)))
    assert answers == [[f"commit tx#{i}"] for i in range(5)]
    assert ref.sent == [("commit", [f"tx#{i}" for i in range(5)])]
    assert remote.calls()["commit"] == (1, 5)


async def test_an_owners_accounts_count_against_their_quota_across_shards(coordinator, shards):
    def account(id: str, owner: str = "user-ada") -> AccountSpec:
        return AccountSpec(id, 1, owner=owner)

    # Given ada's two accounts, one on each shard, under a quota of 3
    first = [account("a-ada-1"), account("b-ada-1")]
    created = await coordinator.create_accounts("user-ada", first, 3)
    assert [a["id"] for a in created] == ["a-ada-1", "b-ada-1"]

    # Then two more are refused whole, and nothing is created
    with pytest.raises(LimitReached) as refused:
        await coordinator.create_accounts("user-ada", [account("a-ada-2"), account("b-ada-2")], 3)
    assert refused.value.details == {"limit": 3, "held": 2, "asked": 2}
    assert await shards[0].get_accounts(["a-ada-2"]) == [None]
    assert await shards[1].get_accounts(["b-ada-2"]) == [None]
    # while repeating the ones she has, with one more, fits
    again = await coordinator.create_accounts("user-ada", [*first, account("a-ada-2")], 3)
    assert [a["id"] for a in again] == ["a-ada-1", "b-ada-1", "a-ada-2"]
    # and an id someone else holds is theirs: a conflict, not counted as hers
    (taken,) = await coordinator.create_accounts("user-bob", [account("a-ada-1", "user-bob")], 3)
    assert isinstance(taken, IdConflict)

    # When bob asks for accounts twice at once, the two cannot both pass the count
    answers = await asyncio.gather(
        coordinator.create_accounts("user-bob", [account(f"{s}-bob-1", "user-bob")
                                                 for s in "ab"], 3),
        coordinator.create_accounts("user-bob", [account(f"{s}-bob-2", "user-bob")
                                                 for s in "ab"], 3),
        return_exceptions=True,
    )  # fmt: skip
    assert sum(isinstance(a, LimitReached) for a in answers) == 1
    held = [(await shard.census("user-bob", []))[0] for shard in shards]
    assert sum(held) == 2
    assert coordinator._owner_locks == {}  # nothing kept per owner once done
