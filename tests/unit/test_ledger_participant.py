"""Two-phase commit coordinated by one of the unit's own shards
(``ParticipantCoordinator`` in ``LedgerShard``), run without Ray: two
in-process shards wired to each other through faulty ports, a FakeClock and a
real SQLite store. A "crash" stops a shard's drivers, lets its writes finish
and opens a new shard on the same journal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.ledger.coordinator import TxState
from actors.ledger.errors import InsufficientFunds
from actors.ledger.model import AccountSpec, Kind, TransferSpec, unit_outcomes
from actors.ledger.shard import LedgerShard
from actors.runtime.clock import FakeClock
from actors.runtime.errors import Unavailable
from actors.runtime.store import SQLiteStore
from tests.conftest import until
from tests.unit.test_ledger import stopped
from tests.unit.test_ledger_coordinator import Port, route, t


class Pair:
    """Shards s0 (accounts a...) and s1 (b...), each reaching the other through a ``Port``."""

    def __init__(self, store: SQLiteStore, clock: FakeClock) -> None:
        self.store, self.clock = store, clock
        self.shards: list[LedgerShard] = []
        #: ports[i] is how the other shard reaches shard i
        self.ports: list[Port] = []

    async def open(self, index: int, *, recover: bool = True) -> LedgerShard:
        shard = LedgerShard(clock=self.clock, name=f"s{index}")
        shard.connect(self.ports, route, index)
        await shard.open(self.store, f"s{index}", on_failure=lambda e: None)
        if recover:
            await shard.coordinator.recover()
        self.ports[index].shard = shard
        self.shards[index] = shard
        return shard

    async def crash(self, index: int, *, snapshot: bool = False) -> LedgerShard:
        """Shard ``index`` dies (optionally right after a snapshot) and comes back."""
        old = self.shards[index]
        for task in list(old.coordinator._drivers.values()):
            task.cancel()
        if snapshot:
            old._take_snapshot(old.journal.assigned)
        await stopped(old)
        return await self.open(index)


@pytest.fixture
async def pair(store: SQLiteStore, clock: FakeClock) -> Pair:
    made = Pair(store, clock)
    made.shards = [LedgerShard(clock=clock, name=f"s{i}") for i in range(2)]
    made.ports = [Port(shard) for shard in made.shards]
    for i in range(2):
        await made.open(i)
    for spec in (
        AccountSpec("a-bank", 1),
        AccountSpec("a-alice", 1, debits_must_not_exceed_credits=True),
        AccountSpec("b-bob", 1, debits_must_not_exceed_credits=True),
        AccountSpec("b-bank", 1),
    ):
        await made.shards[route(spec.id)].create_accounts([spec])
    await run(made.shards[0], t("fund-alice", "a-bank", "a-alice", 100))
    return made


async def run(shard: LedgerShard, *unit: TransferSpec) -> list[Any]:
    (result,) = await shard.run([list(unit)])
    return unit_outcomes(list(unit), result)


async def balances(pair: Pair, account_id: str) -> tuple[int, int, int, int]:
    (a,) = await pair.shards[route(account_id)].get_accounts([account_id])
    return a["debits_pending"], a["debits_posted"], a["credits_pending"], a["credits_posted"]


async def test_the_debit_shard_coordinates_with_one_prepare_and_one_commit_call(pair):
    s0, s1 = pair.shards
    pair.ports[0].calls.clear()
    pair.ports[1].calls.clear()
    records = s0.journal.assigned
    (answer,) = await run(s0, t("x1", "a-alice", "b-bob", 40))
    assert answer["debit_account"]["debits_posted"] == 40
    assert answer["credit_account"]["credits_posted"] == 40
    assert answer["transfer"]["state"] == "posted"
    # the other shard is called twice; the coordinating shard's own legs cost no call
    assert pair.ports[1].calls == ["prepare", "commit"]
    assert pair.ports[0].calls == []
    # and its journal takes the reservation, then one record for decision and commit
    # (then the finish record, which nobody waits for)
    await s0.journal.drain()
    assert s0.journal.assigned - records == 3
    assert s0.coordinator.entries["x1"].state is TxState.COMMITTED
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)
    assert await s0.in_doubt() == [] and await s1.in_doubt() == []
    # a repeat answers the first result and changes nothing
    assert await run(s0, t("x1", "a-alice", "b-bob", 40)) == [answer]
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)


async def test_a_refusal_by_the_other_shard_releases_the_coordinators_reservation(pair):
    s0, s1 = pair.shards
    await run(s0, t("fund-bob", "a-bank", "b-bob", 5))
    # b-bob's shard coordinates a transfer it refuses itself; a-alice's credit is released
    (refused,) = await run(s1, t("x1", "b-bob", "a-alice", 6))
    assert isinstance(refused, InsufficientFunds)
    assert await balances(pair, "a-alice") == (0, 0, 0, 100)
    # a-alice's shard coordinates one the other refuses; its own debit is released
    (refused,) = await run(s0, t("x2", "a-alice", "b-bob", 101))
    assert isinstance(refused, InsufficientFunds)
    assert await balances(pair, "a-alice") == (0, 0, 0, 100)
    assert await s0.in_doubt() == [] and await s1.in_doubt() == []


@pytest.mark.parametrize("snapshot", [False, True])
async def test_the_coordinating_shard_dies_before_its_decision_record(pair, snapshot):
    # Given a unit reserved on a-alice's shard (s0, coordinating) and prepared on
    # the other, whose decision record is never written (s0 dies first)
    s0, s1 = pair.shards
    never = asyncio.Event()

    async def hang(op: str, **args: Any) -> Any:
        await never.wait()

    s0.coordinator.execute = hang  # type: ignore[method-assign]
    stuck = asyncio.ensure_future(run(s0, t("x1", "a-alice", "b-bob", 40)))
    await until(lambda: s1.in_doubt())
    assert await balances(pair, "a-alice") == (40, 0, 0, 100)
    ((txid, coordinator),) = await s1.in_doubt()
    assert coordinator == "s0"

    # When it restarts
    s0 = await pair.crash(0, snapshot=snapshot)

    # Then its own reservation is aborted (presumed abort), and the other shard,
    # asking, hears "abort" and releases its credit
    assert await s0.in_doubt() == []
    assert await balances(pair, "a-alice") == (0, 0, 0, 100)
    assert await s0.resolve([txid]) == ["abort"]
    assert await s1.abort([txid]) == ["aborted"]
    assert await balances(pair, "b-bob") == (0, 0, 0, 0)
    # and a retry of the unit (Ray retries calls in flight) runs anew, once
    (answer,) = await run(s0, t("x1", "a-alice", "b-bob", 40))
    assert answer["credit_account"]["credits_posted"] == 40
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)
    stuck.cancel()


@pytest.mark.parametrize("snapshot", [False, True])
async def test_the_coordinating_shard_dies_after_its_decision_record(pair, snapshot):
    # Given a unit decided and committed on s0 while the other shard's commit hangs
    s0, s1 = pair.shards
    pair.ports[1].calls.clear()
    pair.ports[1].hold["commit"] = asyncio.Event()
    stuck = asyncio.ensure_future(run(s0, t("x1", "a-alice", "b-bob", 40)))
    await until(lambda: "commit" in pair.ports[1].calls)
    assert s0.coordinator.entries["x1"].state is TxState.COMMITTING
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)  # decided and applied at once
    ((txid, _),) = await s1.in_doubt()

    # When s0 restarts (from its journal, or a snapshot taken just now)
    pair.ports[1].hold.clear()
    s0 = await pair.crash(0, snapshot=snapshot)

    # Then the decision survived with its leg: the other shard asking hears
    # "commit", and the sweep started on recovery commits it there, once
    assert s0.coordinator.entries["x1"].state in (TxState.COMMITTING, TxState.COMMITTED)
    assert await s0.resolve([txid]) == ["commit"]
    await asyncio.gather(*s0.coordinator._drivers.values())
    assert s0.coordinator.entries["x1"].state is TxState.COMMITTED
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)
    assert await s1.in_doubt() == []
    (answer,) = await run(s0, t("x1", "a-alice", "b-bob", 40))
    assert answer["credit_account"]["credits_posted"] == 40
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)
    stuck.cancel()


async def test_the_other_shard_dies_after_prepare(pair, clock):
    # Given a unit prepared on b-bob's shard (s1), which is gone before the commit
    s0, s1 = pair.shards
    pair.ports[1].fail.add("commit")
    task = asyncio.ensure_future(run(s0, t("x1", "a-alice", "b-bob", 40)))
    for _ in range(500):  # the driver backs off on the fake clock, then gives up for now
        if task.done():
            break
        await asyncio.sleep(0.01)
        clock.advance(5)
    (unknown,) = await task
    assert isinstance(unknown, Unavailable)  # the caller cannot know yet
    assert s0.coordinator.entries["x1"].state is TxState.COMMITTING

    # When s1 restarts: its prepare is durable, so it is still in doubt
    s1 = await pair.crash(1)
    pair.ports[1].fail.clear()
    ((txid, coordinator),) = await s1.in_doubt()
    assert coordinator == "s0"
    assert await balances(pair, "b-bob") == (0, 0, 40, 0)

    # Then asking s0 tells it "commit", and s0's sweep commits it there, once
    assert await s0.resolve([txid]) == ["commit"]
    assert s0.coordinator.sweep() == 1
    await asyncio.gather(*s0.coordinator._drivers.values())
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)
    assert await s1.in_doubt() == []
    (answer,) = await run(s0, t("x1", "a-alice", "b-bob", 40))
    assert answer["debit_account"]["debits_posted"] == 40
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)


async def test_a_repeat_of_a_forgotten_unit_is_answered_by_both_shards(pair):
    s0, _ = pair.shards
    s0.coordinator.finished_kept = 0  # finished entries are forgotten at once
    (first,) = await run(s0, t("x1", "a-alice", "b-bob", 40))
    assert "x1" not in s0.coordinator.entries
    assert await run(s0, t("x1", "a-alice", "b-bob", 40)) == [first]
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)
    assert await balances(pair, "b-bob") == (0, 0, 0, 40)
    # and it survives a restart: the decision and its finish are in s0's journal
    s0 = await pair.crash(0)
    assert await run(s0, t("x1", "a-alice", "b-bob", 40)) == [first]
    assert await balances(pair, "a-alice") == (0, 40, 0, 100)


async def test_a_cross_shard_pending_transfer_expires_by_its_coordinating_shard(pair, clock):
    s0, s1 = pair.shards
    await run(s0, t("p1", "a-alice", "b-bob", 30, kind=Kind.PENDING, timeout_s=30))
    assert await balances(pair, "a-alice") == (30, 0, 0, 100)
    assert await balances(pair, "b-bob") == (0, 0, 30, 0)
    clock.advance(29)
    assert await s0.coordinator.expire_due() == []
    assert await s1.coordinator.expire_due() == []  # not the other shard's to expire
    # it survives a restart of the coordinating shard (its finish record holds it)
    s0 = await pair.crash(0)
    clock.advance(2)
    assert await s0.coordinator.expire_due() == ["p1"]
    assert await balances(pair, "a-alice") == (0, 0, 0, 100)
    assert await balances(pair, "b-bob") == (0, 0, 0, 0)
    for shard in pair.shards:
        assert (await shard.get_transfers(["p1"]))[0]["state"] == "expired"
    assert s0.coordinator.expiring == {}


async def test_the_units_of_one_call_share_one_prepare_record(pair):
    s0, _ = pair.shards
    records = s0.journal.assigned
    units = [[t(f"x{i}", "a-alice", "b-bob", 1)] for i in range(10)]
    results = await s0.run(units)
    assert [r[0] for r in results] == ["ok"] * 10
    await s0.journal.drain()
    # one record for the ten reservations here, then a decision and a finish per unit
    assert s0.journal.assigned - records == 1 + 10 + 10
    assert await balances(pair, "b-bob") == (0, 0, 0, 10)
