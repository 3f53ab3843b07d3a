"""Ledger (service 8): one shard of accounts, journaled, and its side of two-phase commit.

A ``LedgerShard`` owns the accounts that hash to it (rendezvous hashing of the
account id) and every transfer that touches them. It keeps them in ``Books``
(``actors.ledger.books``: the state and the rules) and journals every
operation that changes them (``Durable``), so an acknowledged transfer
survives a crash.

Two ways in for transfers:

- ``submit``: units whose accounts all live here (a transfer, or a linked
  chain applied all or nothing) are applied at once, atomically.
- two-phase commit, driven by a ``TxCoordinator`` for units that span shards:
  ``prepare`` checks this shard's legs and reserves them (the amount goes into
  the pending balance of the debit or credit account, so the balance rules
  count it; a post or void locks its pending transfer), ``commit`` posts what
  was reserved, ``abort`` releases it. Each is idempotent by transaction id,
  and a transaction resolves once: a commit or abort of a resolved transaction
  answers as the first did, and a prepare arriving after an abort is refused.
  ``in_doubt`` lists transactions prepared and not yet resolved, so a shard
  can ask their coordinator (the actor does, ``in_doubt_after_s``).

Every answer waits for the store: a commit is answered once its record is
committed, and that answer is the shard's acknowledgement of the decision (the
coordinator keeps a decision until each of its shards has acknowledged it).
Reads answer through ``after_commit``: they never show what a crash could
still undo, so nobody sees a transfer that a restart would take back, or
apply again with another timestamp and other balances.

Pending transfers whose timeout passes are voided by a timer with the
injected clock; a pending transfer spanning shards is expired by its
coordinator instead (one decision for both shards), so a shard never expires
it on its own and only refuses to post it once its time is up.

The Ray actor is ``LedgerShardActor`` in ``actors.ledger.actors``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from actors.ledger.books import Books, BooksState
from actors.ledger.errors import TransactionAborted
from actors.ledger.model import AccountSpec, Leg, TransferSpec, UnitResult
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.journal import Durable

log = logging.getLogger(__name__)

#: Resolved transaction ids remembered (to answer repeats and refuse late prepares).
RESOLVED_KEPT = 200_000
#: How a transaction ended here: ("committed", ids of the transfers it made)
#: or ("aborted", ()). A repeated commit rebuilds its answers from the books.
Resolution = tuple[str, tuple[str, ...]]


@dataclass(slots=True)
class Prepared:
    """A transaction prepared here and not yet resolved."""

    coordinator: str
    legs: list[Leg]
    at_ns: int


@dataclass(slots=True)
class ShardState:
    """A shard as a snapshot keeps it."""

    books: BooksState
    prepared: dict[str, Prepared]
    resolved: OrderedDict[str, Resolution]


class LedgerShard(Durable):
    """Accounts and transfers of one shard; see the module docstring."""

    def __init__(self, *, clock: Clock | None = None, name: str = "ledger-shard") -> None:
        self.clock = clock or SystemClock()
        self.name = name
        self.books = Books()
        #: txid -> what it reserved here
        self.prepared: dict[str, Prepared] = {}
        #: txid -> how it ended, oldest first
        self.resolved: OrderedDict[str, Resolution] = OrderedDict()

    # --- state ---------------------------------------------------------------

    def snapshot_state(self) -> ShardState:
        return ShardState(self.books.state(), self.prepared, self.resolved)

    def state_size(self) -> int:
        return self.books.size()

    def restore_state(self, state: ShardState) -> None:
        self.books = Books.restore(state.books)
        self.prepared, self.resolved = state.prepared, state.resolved

    # --- accounts --------------------------------------------------------------

    def apply_create_accounts(self, specs: list[AccountSpec], at: float) -> list[Any]:
        return self.books.create_accounts(specs, at)

    async def create_accounts(self, specs: list[AccountSpec]) -> list[Any]:
        """Per account: the account, or an error (``IdConflict``) for that one alone."""
        for spec in specs:
            spec.check()
        answers: list[Any] = await self.execute(
            "create_accounts", specs=specs, at=self.clock.time()
        )
        return answers

    async def get_accounts(
        self, ids: list[str], owner: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Each account, or None if it is missing or not ``owner``'s (None: anyone's)."""
        return await self.after_commit(self.books.get_accounts(ids, owner))

    async def census(self, owner: str, ids: list[str]) -> tuple[int, int]:
        """How many accounts ``owner`` has here, and how many of ``ids`` are free here."""
        return self.books.census(owner, ids)

    async def history_of(
        self,
        account_id: str,
        *,
        since_ns: int = 0,
        until_ns: int | None = None,
        after_ns: int | None = None,
        limit: int = 100,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Entries of ``account_id`` with since <= timestamp < until, oldest first,
        after the cursor ``after_ns``; ``next_after_ns`` continues (None at the end).
        Only of ``owner``'s account (None: anyone's)."""
        page = self.books.history_page(
            account_id, since_ns=since_ns, until_ns=until_ns, after_ns=after_ns, limit=limit,
            owner=owner,
        )  # fmt: skip
        return await self.after_commit(page)

    # --- transfers applied here ------------------------------------------------

    def apply_submit(self, units: list[list[TransferSpec]], at: float) -> list[UnitResult]:
        return [self.books.apply_unit(unit, at) for unit in units]

    async def submit(self, units: list[list[TransferSpec]]) -> list[UnitResult]:
        """Apply units whose accounts are all on this shard; per unit
        ``("ok", answers)`` or ``("error", index, error)``. A repeat of a unit
        answers as the first time did."""
        results: list[UnitResult] = await self.execute("submit", units=units, at=self.clock.time())
        return results

    async def get_transfers(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """Each transfer as this shard knows it, with its ``sides`` and ``parties``."""
        return await self.after_commit(self.books.get_transfers(ids))

    # --- pending timeouts ------------------------------------------------------

    def apply_expire(self, at: float) -> list[str]:
        """Void every local pending transfer whose timeout has passed."""
        return self.books.expire(at)

    async def expire_due(self) -> list[str]:
        """Void the local pending transfers whose time is up (the timer calls this)."""
        if not self.books.due(self.clock.time()):
            return []
        expired: list[str] = await self.execute("expire", at=self.clock.time())
        return expired

    # --- two-phase commit, shard side ----------------------------------------

    def apply_prepare(self, items: list[tuple[str, str, list[Leg]]], at: float) -> list[Any]:
        return [self._prepare_one(txid, coordinator, legs, at) for txid, coordinator, legs in items]

    def _prepare_one(self, txid: str, coordinator: str, legs: list[Leg], at: float) -> Any:
        if txid in self.prepared:
            return None
        if txid in self.resolved:
            if self.resolved[txid][0] == "committed":
                return None
            return ("error", legs[0][0] if legs else 0, TransactionAborted(txid=txid))
        refused = self.books.prepare_legs(txid, legs, at)
        if refused is None:
            self.prepared[txid] = Prepared(coordinator, legs, int(at * 1e9))
        return refused

    async def prepare(self, items: list[tuple[str, str, list[Leg]]]) -> list[Any]:
        """Per transaction ``(txid, coordinator name, legs)``: None once its legs
        are reserved and durable, ``("error", index in the unit, error)``, or
        ``("repeat", answers by transfer id)`` for legs an earlier, forgotten
        attempt of the same unit committed (``Books.repeat_of``)."""
        answers: list[Any] = await self.execute("prepare", items=items, at=self.clock.time())
        return answers

    def _resolve(self, txid: str, resolution: Resolution) -> None:
        self.resolved[txid] = resolution
        while len(self.resolved) > RESOLVED_KEPT:
            self.resolved.popitem(last=False)

    def apply_commit(self, txids: list[str], at: float) -> list[Any]:
        results: list[Any] = []
        for txid in txids:
            if txid in self.resolved:
                outcome, transfer_ids = self.resolved[txid]
                if outcome != "committed":
                    results.append(TransactionAborted(txid=txid))
                    continue
                transfers = self.books.transfers
                results.append({t: self.books.answer_of(transfers[t]) for t in transfer_ids})
                continue
            if txid not in self.prepared:
                # Resolved so long ago that it is forgotten (a coordinator that
                # lost its finish record drives it again): its transfers say so.
                answers = self.books.committed_by(txid)
                if answers:
                    results.append(answers)
                    continue
                # Never prepared here: the coordinator only commits after every
                # shard prepared, so this is a lost shard state; say so loudly.
                log.error("%s: commit of unknown transaction %s", self.name, txid)
                results.append(TransactionAborted("unknown transaction", txid=txid))
                continue
            legs = self.prepared.pop(txid).legs
            answers = self.books.commit_legs(txid, legs, at)
            self._resolve(txid, ("committed", tuple(answers)))
            results.append(answers)
        return results

    async def commit(self, txids: list[str]) -> list[Any]:
        """Post what each transaction reserved; per txid its answers by transfer id.

        Answers once the commit is in the store (no idempotency key: a commit
        is idempotent itself), so the answer acknowledges the decision for
        good: the coordinator may then forget it, and no answer (nor read)
        ever shows balances or a timestamp that a crash could change. A shard
        that crashes first comes back with the transaction prepared and
        commits it again, when its coordinator tells it or when it asks."""
        results: list[Any] = await self.execute("commit", txids=txids, at=self.clock.time())
        return results

    def apply_abort(self, txids: list[str]) -> list[str]:
        results = []
        for txid in txids:
            if txid in self.resolved:
                results.append(self.resolved[txid][0])
                continue
            if txid in self.prepared:
                self.books.abort_legs(txid, self.prepared.pop(txid).legs)
            self._resolve(txid, ("aborted", ()))
            results.append("aborted")
        return results

    async def abort(self, txids: list[str]) -> list[str]:
        """Release what each transaction reserved (an unknown one is remembered as
        aborted, so a late prepare is refused)."""
        results: list[str] = await self.execute("abort", txids=txids)
        return results

    async def in_doubt(self, older_than_s: float = 0.0) -> list[tuple[str, str]]:
        """``(txid, coordinator)`` of transactions prepared at least ``older_than_s`` ago."""
        cutoff = int((self.clock.time() - older_than_s) * 1e9)
        return [(t, p.coordinator) for t, p in self.prepared.items() if p.at_ns <= cutoff]

    # --- reads for checks --------------------------------------------------------

    async def totals(self) -> dict[str, Any]:
        """Sums over this shard's accounts (for checks and stats)."""
        return await self.after_commit({"prepared": len(self.prepared), **self.books.totals()})

    async def accounts_page(self, after: str = "", limit: int = 1_000) -> list[dict[str, Any]]:
        """Accounts by id, after ``after`` (for audits)."""
        return await self.after_commit(self.books.accounts_page(after, limit))

    def __repr__(self) -> str:
        return (
            f"<LedgerShard {self.name} accounts={len(self.books.accounts)} "
            f"transfers={len(self.books.transfers)} prepared={len(self.prepared)}>"
        )


__all__ = ["LedgerShard", "Prepared", "ShardState"]
