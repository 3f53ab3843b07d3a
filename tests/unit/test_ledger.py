"""LedgerShard run directly (no Ray) on a FakeClock and a real SQLite store:
double-entry rules, flags, idempotency, pending transfers and timeouts, linked
chains, history, and the shard side of two-phase commit. Recovery is a second
shard opened on the same store and stream, as a restarted actor would be."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.ledger.errors import (
    AccountNotFound,
    BalanceOverflow,
    ExceedsDebits,
    ExceedsPendingAmount,
    IdConflict,
    InsufficientFunds,
    LedgerMismatch,
    LinkedEventFailed,
    PendingTransferBusy,
    PendingTransferClosed,
    PendingTransferNotFound,
    TransactionAborted,
)
from actors.ledger.model import (
    BOTH,
    CREDIT,
    DEBIT,
    MAX_AMOUNT,
    MAX_BALANCE,
    AccountSpec,
    Kind,
    TransferSpec,
    chains,
    unit_outcomes,
)
from actors.ledger.shard import LedgerShard
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput
from actors.runtime.store import SQLiteStore

OpenShard = Callable[..., Awaitable[LedgerShard]]


@pytest.fixture
def open_shard(clock: FakeClock, store: SQLiteStore) -> OpenShard:
    async def open_(name: str = "ledger-shard-0", snapshot_every: int = 10_000) -> LedgerShard:
        shard = LedgerShard(clock=clock, name=name)
        failures: list[BaseException] = []
        await shard.open(store, name, snapshot_every=snapshot_every, on_failure=failures.append)
        return shard

    return open_


@pytest.fixture
async def shard(open_shard: OpenShard) -> LedgerShard:
    shard = await open_shard()
    await shard.create_accounts(
        [
            AccountSpec("bank", 1),  # may go negative: where money comes from
            AccountSpec("alice", 1, debits_must_not_exceed_credits=True),
            AccountSpec("bob", 1, debits_must_not_exceed_credits=True),
            AccountSpec("capped", 1, credits_must_not_exceed_debits=True),
            AccountSpec("euro", 2),
        ]
    )
    return shard


def t(id: str, debit: str, credit: str, amount: int, **kw: Any) -> TransferSpec:
    return TransferSpec(id, debit, credit, amount, kw.pop("ledger", 1), **kw)


async def one(shard: LedgerShard, spec: TransferSpec) -> Any:
    """The answer for one transfer, or its error raised."""
    (result,) = await shard.submit([[spec]])
    (outcome,) = unit_outcomes([spec], result)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def balances(shard: LedgerShard, account_id: str) -> tuple[int, int, int, int]:
    (a,) = await shard.get_accounts([account_id])
    assert a is not None
    return a["debits_pending"], a["debits_posted"], a["credits_pending"], a["credits_posted"]


async def fund(shard: LedgerShard, account_id: str, amount: int) -> None:
    await one(shard, t(f"fund-{account_id}-{amount}", "bank", account_id, amount))


# --- accounts --------------------------------------------------------------------


async def test_creating_an_account_twice_with_the_same_body_answers_the_same(shard):
    # Given an existing account; When it is created again, once the same and once different
    again, other = await shard.create_accounts(
        [AccountSpec("alice", 1, debits_must_not_exceed_credits=True), AccountSpec("bob", 2)]
    )
    # Then the same body answers the account, a different one is an id conflict
    assert again["id"] == "alice" and again["flags"] == ["debits_must_not_exceed_credits"]
    assert isinstance(other, IdConflict)
    assert (await shard.get_accounts(["bob"]))[0]["ledger"] == 1


@pytest.mark.parametrize(
    "spec",
    [
        AccountSpec("", 1),
        AccountSpec("has space", 1),
        AccountSpec("x" * 129, 1),
        AccountSpec("a", 0),
        AccountSpec("a", 2**32),
        AccountSpec("a", 1.0),  # type: ignore[arg-type]
        AccountSpec("a", True),  # type: ignore[arg-type]
        AccountSpec("a", 1, code=-1),
        AccountSpec("a", 1, True, True),
    ],
)
async def test_bad_accounts_are_refused_and_nothing_is_created(shard, spec):
    with pytest.raises(InvalidInput):
        await shard.create_accounts([AccountSpec("fine", 1), spec])
    assert await shard.get_accounts(["fine"]) == [None]


# --- double entry --------------------------------------------------------------------


async def test_a_transfer_debits_one_account_credits_the_other_and_answers_balances(shard):
    answer = await one(shard, t("t1", "bank", "alice", 100))
    assert answer["transfer"]["amount"] == 100 and answer["transfer"]["state"] == "posted"
    assert answer["debit_account"]["debits_posted"] == 100
    assert answer["credit_account"]["credits_posted"] == 100
    assert await balances(shard, "bank") == (0, 100, 0, 0)
    assert await balances(shard, "alice") == (0, 0, 0, 100)
    totals = await shard.totals()
    assert totals["debits_posted"] == totals["credits_posted"] == 100


async def test_an_account_that_must_not_overdraw_refuses_and_nothing_changes(shard):
    await fund(shard, "alice", 50)
    with pytest.raises(InsufficientFunds) as refused:
        await one(shard, t("t1", "alice", "bob", 51))
    assert refused.value.details["available"] == 50
    assert await balances(shard, "alice") == (0, 0, 0, 50)
    assert await balances(shard, "bob") == (0, 0, 0, 0)
    # exactly the balance is fine
    await one(shard, t("t2", "alice", "bob", 50))
    assert await balances(shard, "alice") == (0, 50, 0, 50)


async def test_credits_must_not_exceed_debits(shard):
    with pytest.raises(ExceedsDebits):
        await one(shard, t("t1", "bank", "capped", 1))
    await one(shard, t("t2", "capped", "bank", 5))
    await one(shard, t("t3", "bank", "capped", 5))
    with pytest.raises(ExceedsDebits):
        await one(shard, t("t4", "bank", "capped", 1))


async def test_rules_on_accounts_and_ledgers(shard):
    with pytest.raises(AccountNotFound):
        await one(shard, t("t1", "bank", "nobody", 1))
    with pytest.raises(LedgerMismatch):
        await one(shard, t("t2", "bank", "euro", 1))
    with pytest.raises(LedgerMismatch):
        await one(shard, t("t3", "bank", "alice", 1, ledger=2))
    assert await balances(shard, "bank") == (0, 0, 0, 0)


async def test_balances_may_not_overflow(shard):
    await one(shard, t("t1", "bank", "alice", MAX_AMOUNT))
    # 2**128 is out of reach of a test's transfers: put the account at the edge
    shard.books.accounts["alice"].credits_posted = 2**128 - 1
    with pytest.raises(BalanceOverflow):
        await one(shard, t("t2", "bank", "alice", 1))


@pytest.mark.parametrize(
    "spec",
    [
        t("x", "bank", "alice", 0),
        t("x", "bank", "alice", -5),
        t("x", "bank", "alice", 1.5),  # type: ignore[arg-type]
        t("x", "bank", "alice", True),  # type: ignore[arg-type]
        t("x", "bank", "alice", "5"),  # type: ignore[arg-type]
        t("x", "bank", "alice", MAX_AMOUNT + 1),
        t("x", "bank", "bank", 5),
        t("x", "bank", "alice", 5, ledger=0),
        t("x", "bank", "alice", 5, timeout_s=3),
        t("x", "bank", "alice", 5, kind=Kind.PENDING, timeout_s=-1),
        t("x", "bank", "alice", 5, pending_id="p"),
        t("x", "", "", 0, ledger=0, kind=Kind.POST, pending_id="x"),
        t("bad id", "bank", "alice", 5),
    ],
)
def test_bad_transfers_are_refused_at_the_boundary(spec):
    with pytest.raises(InvalidInput):
        spec.check()


# --- idempotency -----------------------------------------------------------------------


async def test_the_same_id_and_body_answers_the_first_result_and_applies_once(shard):
    first = await one(shard, t("t1", "bank", "alice", 10))
    await one(shard, t("t2", "bank", "alice", 5))
    again = await one(shard, t("t1", "bank", "alice", 10))
    assert again == first  # balances as they were right after t1
    assert await balances(shard, "alice") == (0, 0, 0, 15)


async def test_the_same_id_with_another_body_is_an_id_conflict(shard):
    await one(shard, t("t1", "bank", "alice", 10))
    for other in (t("t1", "bank", "alice", 11), t("t1", "bank", "bob", 10)):
        with pytest.raises(IdConflict):
            await one(shard, other)
    assert await balances(shard, "alice") == (0, 0, 0, 10)
    assert await balances(shard, "bob") == (0, 0, 0, 0)


async def test_a_refused_transfer_is_not_remembered(shard):
    # TigerBeetle's rule: only successes are final; a refused id may be tried again
    with pytest.raises(InsufficientFunds):
        await one(shard, t("t1", "alice", "bob", 10))
    await fund(shard, "alice", 10)
    assert (await one(shard, t("t1", "alice", "bob", 10)))["transfer"]["amount"] == 10


# --- linked chains -----------------------------------------------------------------------


async def test_a_linked_chain_applies_all_or_nothing(shard):
    await fund(shard, "alice", 10)
    chain = [t("c1", "alice", "bob", 10, linked=True), t("c2", "bob", "alice", 11)]
    (result,) = await shard.submit(chains(chain))
    first, second = unit_outcomes(chain, result)
    assert isinstance(first, LinkedEventFailed)
    assert isinstance(second, InsufficientFunds)
    assert await balances(shard, "alice") == (0, 0, 0, 10)
    assert await balances(shard, "bob") == (0, 0, 0, 0)
    assert await shard.get_transfers(["c1", "c2"]) == [None, None]
    # later legs see earlier ones: bob can pass on what he just got
    chain = [t("c3", "alice", "bob", 10, linked=True), t("c4", "bob", "alice", 10)]
    (result,) = await shard.submit(chains(chain))
    assert result[0] == "ok"
    assert await balances(shard, "bob") == (0, 10, 0, 10)


def test_a_batch_may_not_end_inside_a_chain_or_repeat_an_id():
    with pytest.raises(InvalidInput):
        chains([t("a", "x", "y", 1, linked=True)])
    with pytest.raises(InvalidInput):
        chains([t("a", "x", "y", 1), t("a", "x", "y", 1)])


# --- pending transfers -------------------------------------------------------------------


async def test_pending_then_post_part_of_it_releases_the_rest(shard):
    await fund(shard, "alice", 100)
    await one(shard, t("p1", "alice", "bob", 60, kind=Kind.PENDING))
    assert await balances(shard, "alice") == (60, 0, 0, 100)
    assert await balances(shard, "bob") == (0, 0, 60, 0)
    with pytest.raises(InsufficientFunds):  # the reservation counts
        await one(shard, t("t1", "alice", "bob", 41))
    post = t("post1", "alice", "bob", 45, kind=Kind.POST, pending_id="p1")
    answer = await one(shard, post)
    assert answer["debit_account"]["debits_posted"] == 45
    assert await balances(shard, "alice") == (0, 45, 0, 100)
    assert await balances(shard, "bob") == (0, 0, 0, 45)
    (pending,) = await shard.get_transfers(["p1"])
    assert pending["state"] == "posted"
    # resolves at most once
    with pytest.raises(PendingTransferClosed):
        await one(shard, t("void1", "alice", "bob", 60, kind=Kind.VOID, pending_id="p1"))
    with pytest.raises(ExceedsPendingAmount):
        await one(shard, t("p2", "alice", "bob", 5, kind=Kind.PENDING))
        await one(shard, t("post2", "alice", "bob", 6, kind=Kind.POST, pending_id="p2"))
    with pytest.raises(PendingTransferNotFound):
        await one(shard, t("post3", "alice", "bob", 6, kind=Kind.POST, pending_id="t1"))


async def test_void_releases_and_a_pending_transfer_times_out(shard, clock):
    await fund(shard, "alice", 100)
    await one(shard, t("p1", "alice", "bob", 30, kind=Kind.PENDING))
    await one(shard, t("v1", "alice", "bob", 30, kind=Kind.VOID, pending_id="p1"))
    assert await balances(shard, "alice") == (0, 0, 0, 100)
    # a pending transfer with a timeout is voided once it passes, by the timer
    await one(shard, t("p2", "alice", "bob", 40, kind=Kind.PENDING, timeout_s=10))
    clock.advance(9)
    assert await shard.expire_due() == []
    clock.advance(1)
    assert await shard.expire_due() == ["p2"]
    assert await balances(shard, "alice") == (0, 0, 0, 100)
    (pending,) = await shard.get_transfers(["p2"])
    assert pending["state"] == "expired"
    with pytest.raises(PendingTransferClosed) as closed:
        await one(shard, t("late", "alice", "bob", 40, kind=Kind.POST, pending_id="p2"))
    assert closed.value.details["state"] == "expired"


async def test_a_post_after_the_timeout_is_refused_even_before_the_timer_runs(shard, clock):
    await fund(shard, "alice", 100)
    await one(shard, t("p1", "alice", "bob", 40, kind=Kind.PENDING, timeout_s=5))
    clock.advance(5)
    with pytest.raises(PendingTransferClosed):
        await one(shard, t("late", "alice", "bob", 40, kind=Kind.POST, pending_id="p1"))
    assert await balances(shard, "alice") == (40, 0, 0, 100)


# --- history -------------------------------------------------------------------------------


async def test_history_pages_through_a_time_range(shard, clock):
    stamps = []
    for i in range(5):
        answer = await one(shard, t(f"h{i}", "bank", "alice", i + 1))
        stamps.append(answer["transfer"]["timestamp"])
        clock.advance(1)
    assert stamps == sorted(set(stamps))
    page = await shard.history_of("alice", limit=2)
    assert [e["transfer_id"] for e in page["entries"]] == ["h0", "h1"]
    assert page["entries"][1]["credits_posted"] == 3
    page = await shard.history_of("alice", limit=2, after_ns=page["next_after_ns"])
    assert [e["transfer_id"] for e in page["entries"]] == ["h2", "h3"]
    page = await shard.history_of("alice", limit=2, after_ns=page["next_after_ns"])
    assert [e["transfer_id"] for e in page["entries"]] == ["h4"]
    assert page["next_after_ns"] is None
    ranged = await shard.history_of("alice", since_ns=stamps[1], until_ns=stamps[3])
    assert [e["transfer_id"] for e in ranged["entries"]] == ["h1", "h2"]
    with pytest.raises(AccountNotFound):
        await shard.history_of("nobody")


# --- recovery ------------------------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [10_000, 3])
async def test_a_restarted_shard_has_every_acknowledged_change(open_shard, clock, snapshot_every):
    shard = await open_shard(snapshot_every=snapshot_every)
    await shard.create_accounts([AccountSpec("bank", 1), AccountSpec("alice", 1)])
    for i in range(5):
        await one(shard, t(f"t{i}", "bank", "alice", 10))
    await one(shard, t("p", "bank", "alice", 7, kind=Kind.PENDING, timeout_s=60))
    await shard.prepare([("tx#1", "coord", [(0, t("x", "bank", "zed", 3), (DEBIT,))])])
    await stopped(shard)

    again = await open_shard(snapshot_every=snapshot_every)
    assert await balances(again, "alice") == (0, 0, 7, 50)
    assert await balances(again, "bank") == (10, 50, 0, 0)
    assert [txid for txid, _ in await again.in_doubt()] == ["tx#1"]
    assert (await one(again, t("t0", "bank", "alice", 10)))["credit_account"][
        "credits_posted"
    ] == 10
    clock.advance(60)
    assert await again.expire_due() == ["p"]


async def test_records_and_a_snapshot_bring_back_the_same_shard(open_shard, store):
    # Given a shard with every kind of state, one balance at the 128-bit edge
    # (beyond what MessagePack's integers hold), and a snapshot of it
    shard = await open_shard(snapshot_every=1)
    await shard.create_accounts([AccountSpec("bank", 1), AccountSpec("alice", 1)])
    await one(shard, t("t1", "bank", "alice", 10))
    await one(shard, t("p1", "alice", "bank", 4, kind=Kind.PENDING, timeout_s=60))
    await shard.prepare([("tx#1", "coord", [(0, t("x1", "bank", "zed", 3), (DEBIT,))])])
    await shard.prepare([("tx#2", "coord", [(0, t("x2", "zed", "alice", 2), (CREDIT,))])])
    committed = await shard.commit(["tx#2"])
    shard.books.accounts["alice"].credits_posted = MAX_BALANCE - 1  # out of reach otherwise
    for _ in range(20):  # records that add no state, until one takes a snapshot
        await shard.abort(["tx#3"])
    await stopped(shard)
    assert await store.read_snapshot("ledger-shard-0") is not None
    # and records after it
    answer = await one(shard, t("t2", "bank", "alice", 1))
    assert answer["credit_account"]["credits_posted"] == MAX_BALANCE
    await shard.abort(["tx#1"])
    await stopped(shard)

    # When it is opened again from the store
    again = await open_shard(snapshot_every=1)

    # Then everything came back as it was
    assert again.books.accounts == shard.books.accounts
    assert again.books.transfers == shard.books.transfers
    assert again.books.history == shard.books.history
    assert again.books.expiries == shard.books.expiries
    assert again.books.last_ts == shard.books.last_ts
    assert again.prepared == shard.prepared
    assert again.resolved == shard.resolved
    # and repeats answer as the first time
    assert await again.commit(["tx#2"]) == committed
    assert await one(again, t("t2", "bank", "alice", 1)) == answer


async def stopped(durable: Any) -> None:
    """Let a durable object finish its writes, as a process does before it dies
    (a snapshot written during the next one's recovery would race it)."""
    await durable.journal.drain()
    if durable._snapshot_task is not None:
        await durable._snapshot_task


# --- two-phase commit, shard side ------------------------------------------------------------


def leg(spec: TransferSpec, sides: tuple[str, ...], index: int = 0) -> tuple[Any, ...]:
    return (index, spec, sides)


async def test_prepare_reserves_commit_posts_and_both_are_idempotent(shard):
    await fund(shard, "alice", 50)
    spec = t("x1", "alice", "remote", 30)
    item = ("tx#1", "coord", [leg(spec, (DEBIT,))])
    assert await shard.prepare([item]) == [None]
    assert await balances(shard, "alice") == (30, 0, 0, 50)
    assert await shard.get_transfers(["x1"]) == [None]  # invisible until committed
    # the reservation counts against the balance rule
    refused = await shard.prepare([("tx#2", "coord", [leg(t("x2", "alice", "r", 21), (DEBIT,))])])
    assert isinstance(refused[0][2], InsufficientFunds)
    assert await shard.prepare([item]) == [None]  # a repeat changes nothing
    assert await balances(shard, "alice") == (30, 0, 0, 50)

    (answers,) = await shard.commit(["tx#1"])
    assert answers["x1"]["debit_account"]["debits_posted"] == 30
    assert answers["x1"]["credit_account"] is None  # the other shard's side
    assert await balances(shard, "alice") == (0, 30, 0, 50)
    assert await shard.commit(["tx#1"]) == [answers]
    assert await balances(shard, "alice") == (0, 30, 0, 50)
    assert await shard.abort(["tx#1"]) == ["committed"]
    assert await shard.in_doubt() == []


async def test_abort_releases_and_a_late_prepare_is_refused(shard):
    await fund(shard, "alice", 50)
    item = ("tx#1", "coord", [leg(t("x1", "alice", "remote", 30), (DEBIT,))])
    await shard.prepare([item])
    assert await shard.abort(["tx#1"]) == ["aborted"]
    assert await balances(shard, "alice") == (0, 0, 0, 50)
    assert await shard.abort(["tx#1"]) == ["aborted"]
    (late,) = await shard.prepare([item])
    assert isinstance(late[2], TransactionAborted)
    assert await balances(shard, "alice") == (0, 0, 0, 50)
    # an abort that arrives before its prepare wins too
    assert await shard.abort(["tx#9"]) == ["aborted"]
    (late,) = await shard.prepare([("tx#9", "coord", item[2])])
    assert isinstance(late[2], TransactionAborted)


async def test_a_prepared_post_locks_its_pending_transfer(shard):
    await fund(shard, "alice", 50)
    await one(shard, t("p1", "alice", "bob", 20, kind=Kind.PENDING))
    post = t("post", "alice", "bob", 20, kind=Kind.POST, pending_id="p1")
    void = t("void", "alice", "bob", 20, kind=Kind.VOID, pending_id="p1")
    assert await shard.prepare([("tx#1", "c", [leg(post, BOTH)])]) == [None]
    (busy,) = await shard.prepare([("tx#2", "c", [leg(void, BOTH)])])
    assert isinstance(busy[2], PendingTransferBusy)
    with pytest.raises(PendingTransferBusy):
        await one(shard, void)
    await shard.commit(["tx#1"])
    assert await balances(shard, "alice") == (0, 20, 0, 50)
    assert (await shard.get_transfers(["p1"]))[0]["state"] == "posted"


async def test_in_doubt_lists_old_prepared_transactions_only(shard, clock):
    await fund(shard, "alice", 50)
    await shard.prepare([("tx#1", "c0", [leg(t("x1", "alice", "r", 1), (DEBIT,))])])
    clock.advance(10)
    await shard.prepare([("tx#2", "c1", [leg(t("x2", "alice", "r", 1), (DEBIT,))])])
    assert await shard.in_doubt(5) == [("tx#1", "c0")]


async def test_a_credit_leg_is_checked_against_its_own_account(shard):
    spec = t("x1", "remote", "capped", 5)
    (refused,) = await shard.prepare([("tx#1", "c", [leg(spec, (CREDIT,))])])
    assert isinstance(refused[2], ExceedsDebits)
    (missing,) = await shard.prepare([("tx#2", "c", [leg(t("x2", "r", "nobody", 5), (CREDIT,))])])
    assert isinstance(missing[2], AccountNotFound)


# --- owners ------------------------------------------------------------------------


ADA, BOB = "user-ada", "user-bob"


@pytest.fixture
async def owned(shard: LedgerShard) -> LedgerShard:
    """On top of the system's accounts: ada's and bob's, each funded with 100."""
    await shard.create_accounts(
        [
            AccountSpec("ada-1", 1, debits_must_not_exceed_credits=True, owner=ADA),
            AccountSpec("ada-2", 1, owner=ADA),
            AccountSpec("bob-1", 1, debits_must_not_exceed_credits=True, owner=BOB),
            AccountSpec("bob-capped", 1, credits_must_not_exceed_debits=True, owner=BOB),
            AccountSpec("bob-euro", 2, owner=BOB),
        ]
    )
    for account in ("ada-1", "bob-1"):
        await fund(shard, account, 100)
    return shard


def refusal(error: BaseException) -> tuple[Any, ...]:
    """All a client sees of a refusal."""
    assert isinstance(error, Exception)
    return type(error), error.code, error.message, error.details  # type: ignore[attr-defined]


async def outcome(shard: LedgerShard, spec: TransferSpec) -> Any:
    (result,) = await shard.submit([[spec]])
    (answer,) = unit_outcomes([spec], result)
    return answer


async def test_a_transfer_debits_only_an_account_of_its_owner(owned):
    # Bob may not debit ada's account: it answers as a missing account does
    stolen = await outcome(owned, t("steal", "ada-1", "bob-1", 10, owner=BOB))
    missing = await outcome(owned, t("steal", "nobody", "bob-1", 10, owner=BOB))
    assert refusal(stolen)[:3] == refusal(missing)[:3]
    assert type(stolen) is AccountNotFound and stolen.details == {"account_id": "ada-1"}
    # nor can he learn ada's transfer by repeating it (its id answers as any taken id)
    await one(owned, t("ada-pays", "ada-1", "ada-2", 5, owner=ADA))
    repeat = await outcome(owned, t("ada-pays", "ada-1", "ada-2", 5, owner=BOB))
    assert isinstance(repeat, AccountNotFound)
    # nor close her pending transfer
    await one(owned, t("ada-hold", "ada-1", "bob-1", 5, owner=ADA, kind=Kind.PENDING))
    void = t("bob-void", "ada-1", "bob-1", 5, owner=BOB, kind=Kind.VOID, pending_id="ada-hold")
    assert isinstance(await outcome(owned, void), AccountNotFound | PendingTransferNotFound)
    void = t("bob-void", "bob-1", "ada-1", 5, owner=BOB, kind=Kind.VOID, pending_id="ada-hold")
    assert isinstance(await outcome(owned, void), AccountNotFound | PendingTransferNotFound)
    assert await balances(owned, "ada-1") == (5, 5, 0, 100)
    assert (await owned.get_transfers(["ada-hold"]))[0]["state"] == "pending"
    # while she may
    void = t("ada-void", "ada-1", "bob-1", 5, owner=ADA, kind=Kind.VOID, pending_id="ada-hold")
    await one(owned, void)
    assert await balances(owned, "ada-1") == (0, 5, 0, 100)


async def test_a_credit_to_another_users_account_tells_nothing_of_it(owned):
    # Ada may pay bob: the answer shows her balances, not his
    answer = await one(owned, t("gift", "ada-1", "bob-1", 10, owner=ADA))
    assert answer["debit_account"]["debits_posted"] == 10
    assert answer["credit_account"] is None
    assert await one(owned, t("gift", "ada-1", "bob-1", 10, owner=ADA)) == answer  # a repeat
    assert await balances(owned, "bob-1") == (0, 0, 0, 110)
    # An account of bob's that refuses the credit (its flag, another ledger)
    # answers exactly as a missing account does
    missing = refusal(await outcome(owned, t("x1", "ada-1", "nobody", 1, owner=ADA)))
    for credit, ledger in (("bob-capped", 1), ("bob-euro", 1)):
        refused = await outcome(owned, t("x1", "ada-1", credit, 1, owner=ADA, ledger=ledger))
        assert refusal(refused)[:3] == missing[:3]
        assert refused.details == {"account_id": credit}
    # (her own account's refusals say what they are)
    own = await outcome(owned, t("x2", "ada-1", "ada-2", 1_000, owner=ADA))
    assert isinstance(own, InsufficientFunds) and own.details["account_id"] == "ada-1"
    # and the system's transfers see every account
    system = await one(owned, t("x3", "bank", "bob-1", 1))
    assert system["credit_account"]["credits_posted"] == 111


async def test_reads_show_an_owner_only_their_accounts_and_their_transfers(owned):
    await one(owned, t("gift", "ada-1", "bob-1", 10, owner=ADA))
    assert await owned.get_accounts(["ada-1", "bob-1", "nobody"], ADA) == [
        (await owned.get_accounts(["ada-1"]))[0], None, None,
    ]  # fmt: skip
    with pytest.raises(AccountNotFound):
        await owned.history_of("bob-1", owner=ADA)
    assert [e["transfer_id"] for e in (await owned.history_of("ada-1", owner=ADA))["entries"]] == [
        "fund-ada-1-100", "gift",
    ]  # fmt: skip
    (gift,) = await owned.get_transfers(["gift"])
    assert gift["parties"] == [ADA, BOB]  # who may see it: its owner, its accounts' owners
    (funding,) = await owned.get_transfers(["fund-ada-1-100"])
    assert funding["parties"] == ["", ADA]  # the system's, to ada's account


async def test_an_owners_accounts_are_counted_per_shard(owned):
    assert await owned.census(ADA, ["ada-1", "ada-3", "bob-1", "new"]) == (2, 2)
    assert await owned.census("user-nobody", []) == (0, 0)
    await owned.create_accounts([AccountSpec("ada-3", 1, owner=ADA)])
    # the same id for another owner is taken, whatever its body
    (taken,) = await owned.create_accounts([AccountSpec("ada-3", 1, owner=BOB)])
    assert isinstance(taken, IdConflict)
    assert (await owned.census(ADA, []))[0] == 3
    assert (await owned.census(BOB, []))[0] == 3
