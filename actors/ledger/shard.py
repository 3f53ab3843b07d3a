"""Ledger (service 8): one shard of accounts, as a plain class, and its actor.

A ``LedgerShard`` owns the accounts that hash to it (rendezvous hashing of the
account id) and every transfer that touches them. Everything that changes it
is journaled (``Durable``), so an acknowledged transfer survives a crash.

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
  can ask their coordinator (the actor does, ``ledger_in_doubt_after_s``).

Balance rules are TigerBeetle's: with ``debits_must_not_exceed_credits`` an
account's debits (pending + posted + this amount) may not exceed its posted
credits (``insufficient_funds``), and symmetrically for
``credits_must_not_exceed_debits`` (``exceeds_debits``).

Pending transfers whose timeout passes are voided by a timer with the
injected clock; a pending transfer spanning shards is expired by its
coordinator instead (one decision for both shards), so a shard never expires
it on its own and only refuses to post it once its time is up.

Every transfer gets a timestamp in integer nanoseconds, unique and
increasing per shard; history pages and time ranges use them.
"""

from __future__ import annotations

import copy
import heapq
import logging
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from actors.ledger.errors import (
    AccountNotFound,
    BalanceOverflow,
    ExceedsDebits,
    ExceedsPendingAmount,
    IdConflict,
    InsufficientFunds,
    LedgerMismatch,
    PendingTransferBusy,
    PendingTransferClosed,
    PendingTransferNotFound,
    TransactionAborted,
    TransactionInDoubt,
)
from actors.ledger.model import (
    MAX_BALANCE,
    AccountSpec,
    Kind,
    TransferSpec,
    UnitResult,
    error_result,
)
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.journal import Durable

log = logging.getLogger(__name__)

#: Resolved transaction ids remembered (to answer repeats and refuse late prepares).
RESOLVED_KEPT = 200_000
#: Timeouts are kept to the millisecond: timestamps are unique nanoseconds
#: derived from float seconds, so a deadline may sit a few ns after its second.
EXPIRY_SLACK_NS = 1_000_000
#: Sides of a leg.
DEBIT, CREDIT = "debit", "credit"
BOTH = (DEBIT, CREDIT)
#: Fields of a history entry (balances are the account's right after the entry).
HISTORY_FIELDS = (
    "timestamp", "transfer_id", "side", "kind", "amount",
    "debits_pending", "debits_posted", "credits_pending", "credits_posted",
)  # fmt: skip
#: A leg of a cross-shard unit: (index in the unit, transfer, sides on this shard).
Leg = tuple[int, TransferSpec, tuple[str, ...]]


@dataclass
class Account:
    spec: AccountSpec
    timestamp: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    def balances(self) -> dict[str, Any]:
        return {
            "id": self.spec.id,
            "debits_pending": self.debits_pending,
            "debits_posted": self.debits_posted,
            "credits_pending": self.credits_pending,
            "credits_posted": self.credits_posted,
        }

    def public(self) -> dict[str, Any]:
        return {
            **self.balances(),
            "ledger": self.spec.ledger,
            "code": self.spec.code,
            "flags": self.spec.flags,
            "timestamp": self.timestamp,
        }


@dataclass
class Stored:
    """A transfer as this shard keeps it (for a cross-shard one: this shard's sides)."""

    spec: TransferSpec
    sides: tuple[str, ...]
    #: Transaction that created it (None when applied locally).
    txid: str | None
    timestamp: int = 0
    #: "prepared" (invisible until committed), "posted", or for a pending
    #: transfer "pending" / "posted" / "voided" / "expired".
    state: str = "prepared"
    expires_at: int = 0  #: ns; 0: never
    #: Transaction that holds this pending transfer for a post or void.
    locked_by: str | None = None
    answer: dict[str, Any] | None = None

    @property
    def cross(self) -> bool:
        return self.sides != BOTH

    def public(self) -> dict[str, Any]:
        s = self.spec
        return {
            "id": s.id,
            "debit_account_id": s.debit_account_id,
            "credit_account_id": s.credit_account_id,
            "amount": s.amount,
            "ledger": s.ledger,
            "code": s.code,
            "flags": s.flags,
            "pending_id": s.pending_id,
            "timeout_s": s.timeout_s,
            "timestamp": self.timestamp,
            "state": self.state,
        }


class _Txn:
    """Copy-on-write view of the shard: a unit's changes land in the shard only
    if all of it succeeds, so a refusal changes nothing."""

    def __init__(self, shard: LedgerShard) -> None:
        self.shard = shard
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Stored] = {}
        self.history: list[tuple[str, tuple[Any, ...]]] = []
        self.expiries: list[tuple[int, str]] = []

    def account(self, account_id: str) -> Account:
        if account_id not in self.accounts:
            found = self.shard.accounts.get(account_id)
            if found is None:
                raise AccountNotFound(account_id=account_id)
            self.accounts[account_id] = copy.copy(found)
        return self.accounts[account_id]

    def transfer(self, transfer_id: str) -> Stored | None:
        if transfer_id in self.transfers:
            return self.transfers[transfer_id]
        found = self.shard.transfers.get(transfer_id)
        if found is not None:
            self.transfers[transfer_id] = found = copy.copy(found)
        return found

    def put(self, stored: Stored) -> None:
        self.transfers[stored.spec.id] = stored

    def record(
        self, stored: Stored, amount: int, side: str, *, kind: str | None = None, ts: int = 0
    ) -> None:
        spec, account_id = stored.spec, self.side_account_id(stored.spec, side)
        a = self.account(account_id)
        entry = (
            ts or stored.timestamp,
            spec.id,
            side,
            kind or spec.kind.value,
            amount,
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        )
        self.history.append((account_id, entry))

    @staticmethod
    def side_account_id(spec: TransferSpec, side: str) -> str:
        return spec.debit_account_id if side == DEBIT else spec.credit_account_id

    def commit(self) -> None:
        shard = self.shard
        shard.accounts.update(self.accounts)
        for transfer_id, stored in self.transfers.items():
            if stored.state == "dropped":
                shard.transfers.pop(transfer_id, None)
            else:
                shard.transfers[transfer_id] = stored
        for account_id, entry in self.history:
            shard.history.setdefault(account_id, []).append(entry)
        for item in self.expiries:
            heapq.heappush(shard.expiries, item)


class LedgerShard(Durable):
    """Accounts and transfers of one shard; see the module docstring."""

    def __init__(self, *, clock: Clock | None = None, name: str = "ledger-shard") -> None:
        self.clock = clock or SystemClock()
        self.name = name
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Stored] = {}
        #: account id -> [(timestamp, transfer id, side, kind, amount, balances...)], by time.
        self.history: dict[str, list[tuple[Any, ...]]] = {}
        #: txid -> (coordinator, legs, prepared at ns)
        self.prepared: dict[str, tuple[str, list[Leg], int]] = {}
        #: txid -> ("committed", answers) | ("aborted", None)
        self.resolved: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        #: (expires at ns, transfer id) of local pending transfers with a timeout.
        self.expiries: list[tuple[int, str]] = []
        self.last_ts = 0

    # --- state ---------------------------------------------------------------

    def snapshot_state(self) -> tuple[Any, ...]:
        return (
            self.accounts,
            self.transfers,
            self.history,
            self.prepared,
            list(self.resolved.items()),
            self.expiries,
            self.last_ts,
        )

    def state_size(self) -> int:
        return len(self.accounts) + 2 * len(self.transfers)  # history: an entry per side

    def restore_state(self, state: tuple[Any, ...]) -> None:
        accounts, transfers, history, prepared, resolved, expiries, last_ts = state
        self.accounts, self.transfers, self.history = accounts, transfers, history
        self.prepared, self.resolved = prepared, OrderedDict(resolved)
        self.expiries, self.last_ts = expiries, last_ts

    def _stamp(self, at: float) -> int:
        """A unique, increasing timestamp (ns) no earlier than ``at``."""
        self.last_ts = max(int(at * 1e9), self.last_ts + 1)
        return self.last_ts

    # --- accounts --------------------------------------------------------------

    def apply_create_accounts(self, specs: list[AccountSpec], at: float) -> list[Any]:
        answers: list[Any] = []
        for spec in specs:
            existing = self.accounts.get(spec.id)
            if existing is not None:
                if existing.spec != spec:
                    answers.append(IdConflict("the account exists with another body", id=spec.id))
                else:
                    answers.append(existing.public())
                continue
            account = Account(spec, self._stamp(at))
            self.accounts[spec.id] = account
            answers.append(account.public())
        return answers

    async def create_accounts(self, specs: list[AccountSpec]) -> list[Any]:
        """Per account: the account, or an error (``IdConflict``) for that one alone."""
        for spec in specs:
            spec.check()
        answers: list[Any] = await self.execute(
            "create_accounts", specs=specs, at=self.clock.time()
        )
        return answers

    async def get_accounts(self, ids: list[str]) -> list[dict[str, Any] | None]:
        return [None if (a := self.accounts.get(i)) is None else a.public() for i in ids]

    async def history_of(
        self,
        account_id: str,
        *,
        since_ns: int = 0,
        until_ns: int | None = None,
        after_ns: int | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Entries of ``account_id`` with since <= timestamp < until, oldest first,
        after the cursor ``after_ns``; ``next_after_ns`` continues (None at the end)."""
        if account_id not in self.accounts:
            raise AccountNotFound(account_id=account_id)
        if limit < 1:
            raise InvalidInput("limit must be at least 1", field="limit")
        entries = self.history.get(account_id, [])
        low = since_ns if after_ns is None else max(since_ns, after_ns + 1)
        start = bisect_left(entries, (low,))
        stop = len(entries) if until_ns is None else bisect_left(entries, (until_ns,))
        page = entries[start : min(stop, start + limit)]
        more = start + limit < stop
        return {
            "account_id": account_id,
            "entries": [dict(zip(HISTORY_FIELDS, entry, strict=True)) for entry in page],
            "next_after_ns": page[-1][0] if more and page else None,
        }

    # --- transfers: the rules ------------------------------------------------

    def _claim_id(self, txn: _Txn, spec: TransferSpec, txid: str | None) -> Stored | None:
        """The stored transfer if this exact one already exists; raises if the id is taken."""
        existing = txn.transfer(spec.id)
        if existing is None:
            return None
        if existing.state == "prepared" and existing.spec == spec:
            # an earlier attempt of the same transfer still awaits its outcome
            raise TransactionInDoubt(transfer_id=spec.id, txid=existing.txid)
        if existing.spec != spec or existing.txid != txid or existing.state == "prepared":
            raise IdConflict("the transfer id is already used", id=spec.id)
        return existing

    def _reserve(
        self,
        txn: _Txn,
        spec: TransferSpec,
        sides: tuple[str, ...],
        *,
        pending: bool,
        earlier: dict[tuple[str, str], int] | None = None,
    ) -> None:
        """Check a new movement of ``spec.amount`` and add it (to pending, or posted).

        ``earlier``: what earlier legs of the same transaction reserved to be
        posted, by (account, side); the rules count it as posted, so a linked
        chain behaves the same whether it spans shards or not."""
        amount = spec.amount
        earlier = {} if earlier is None else earlier
        for side in sides:
            account = txn.account(txn.side_account_id(spec, side))
            if account.spec.ledger != spec.ledger:
                raise LedgerMismatch(
                    account_id=account.spec.id, account_ledger=account.spec.ledger,
                    transfer_ledger=spec.ledger,
                )  # fmt: skip
        for side in sides:
            account = txn.account(txn.side_account_id(spec, side))
            if side == DEBIT:
                if account.spec.debits_must_not_exceed_credits and (
                    account.debits_pending + account.debits_posted + amount
                    > account.credits_posted + earlier.get((account.spec.id, CREDIT), 0)
                ):
                    available = (
                        account.credits_posted
                        + earlier.get((account.spec.id, CREDIT), 0)
                        - account.debits_pending
                        - account.debits_posted
                    )
                    raise InsufficientFunds(
                        account_id=account.spec.id, available=available, amount=amount
                    )
                if pending:
                    account.debits_pending += amount
                else:
                    account.debits_posted += amount
                total = account.debits_pending + account.debits_posted
            else:
                if account.spec.credits_must_not_exceed_debits and (
                    account.credits_pending + account.credits_posted + amount
                    > account.debits_posted + earlier.get((account.spec.id, DEBIT), 0)
                ):
                    available = (
                        account.debits_posted
                        + earlier.get((account.spec.id, DEBIT), 0)
                        - account.credits_pending
                        - account.credits_posted
                    )
                    raise ExceedsDebits(
                        account_id=account.spec.id, available=available, amount=amount
                    )
                if pending:
                    account.credits_pending += amount
                else:
                    account.credits_posted += amount
                total = account.credits_pending + account.credits_posted
            if total > MAX_BALANCE:
                raise BalanceOverflow(account_id=account.spec.id)

    @staticmethod
    def _move(
        txn: _Txn, spec: TransferSpec, sides: tuple[str, ...], release: int, post: int
    ) -> None:
        """Take ``release`` out of pending and put ``post`` into posted, on each side."""
        for side in sides:
            account = txn.account(txn.side_account_id(spec, side))
            if side == DEBIT:
                account.debits_pending -= release
                account.debits_posted += post
            else:
                account.credits_pending -= release
                account.credits_posted += post

    def _pending_for(
        self, txn: _Txn, spec: TransferSpec, sides: tuple[str, ...], at_ns: int, txid: str | None
    ) -> Stored:
        """The pending transfer a post/void names, checked to be open and to match."""
        assert spec.pending_id is not None
        pending = txn.transfer(spec.pending_id)
        if pending is None or pending.spec.kind is not Kind.PENDING or pending.state == "prepared":
            raise PendingTransferNotFound(pending_id=spec.pending_id)
        if pending.state != "pending":
            raise PendingTransferClosed(pending_id=spec.pending_id, state=pending.state)
        late = pending.expires_at and at_ns + EXPIRY_SLACK_NS >= pending.expires_at
        if late and not spec.expiry:
            raise PendingTransferClosed(pending_id=spec.pending_id, state="expired")
        if pending.locked_by is not None and pending.locked_by != txid:
            raise PendingTransferBusy(pending_id=spec.pending_id)
        p = pending.spec
        if (spec.debit_account_id, spec.credit_account_id, spec.ledger) != (
            p.debit_account_id,
            p.credit_account_id,
            p.ledger,
        ) or not set(sides) <= set(pending.sides):
            raise InvalidInput("the accounts or ledger differ from the pending transfer's")
        if spec.amount > p.amount:
            raise ExceedsPendingAmount(pending_id=p.id, pending_amount=p.amount, amount=spec.amount)
        if spec.kind is Kind.VOID and spec.amount != p.amount:
            raise InvalidInput("a void releases the whole pending amount", field="amount")
        return pending

    def _finish(
        self, txn: _Txn, spec: TransferSpec, sides: tuple[str, ...], at_ns: int, txid: str | None
    ) -> Stored:
        """Apply a transfer's effect for good (locally, or at commit after its prepare)."""
        stored = txn.transfer(spec.id)
        if stored is None:  # a local apply: nothing reserved yet
            stored = Stored(spec, sides, txid)
            if spec.kind in (Kind.POSTED, Kind.PENDING):
                self._reserve(txn, spec, sides, pending=spec.kind is Kind.PENDING)
            else:
                pending = self._pending_for(txn, spec, sides, at_ns, txid)
        else:  # committing what prepare reserved
            if spec.kind is Kind.POSTED:
                self._move(txn, spec, sides, spec.amount, spec.amount)
            if spec.kind in (Kind.POST, Kind.VOID):
                pending = txn.transfer(spec.pending_id or "")  # type: ignore[assignment]
                assert pending is not None
        if spec.kind in (Kind.POST, Kind.VOID):
            posted = spec.amount if spec.kind is Kind.POST else 0
            self._move(txn, pending.spec, sides, pending.spec.amount, posted)
            pending.state = "posted" if spec.kind is Kind.POST else "voided"
            if spec.expiry:
                pending.state = "expired"
            pending.locked_by = None
        stored.timestamp = self._stamp(at_ns / 1e9)
        stored.state = "pending" if spec.kind is Kind.PENDING else "posted"
        if spec.kind is Kind.PENDING and spec.timeout_s:
            stored.expires_at = stored.timestamp + spec.timeout_s * 1_000_000_000
            if not stored.cross:
                txn.expiries.append((stored.expires_at, spec.id))
        amount = spec.amount if spec.kind is not Kind.VOID else 0
        for side in sides:
            txn.record(stored, amount, side)
        txn.put(stored)
        return stored

    @staticmethod
    def _answer(txn: _Txn, stored: Stored) -> dict[str, Any]:
        spec = stored.spec
        return {
            "transfer": stored.public(),
            "debit_account": txn.account(spec.debit_account_id).balances()
            if DEBIT in stored.sides
            else None,
            "credit_account": txn.account(spec.credit_account_id).balances()
            if CREDIT in stored.sides
            else None,
        }

    # --- transfers: local units ----------------------------------------------

    def apply_submit(self, units: list[list[TransferSpec]], at: float) -> list[UnitResult]:
        return [self._apply_unit(unit, at) for unit in units]

    def _apply_unit(self, unit: list[TransferSpec], at: float) -> UnitResult:
        txn = _Txn(self)
        at_ns = int(at * 1e9)
        last_ts = self.last_ts
        answers = []
        repeats = 0
        for index, spec in enumerate(unit):
            try:
                existing = self._claim_id(txn, spec, None)
                if existing is not None:
                    repeats += 1
                    answers.append(existing.answer)
                    continue
                if repeats:
                    raise IdConflict("part of this linked chain exists already", id=spec.id)
                stored = self._finish(txn, spec, BOTH, at_ns, None)
                stored.answer = self._answer(txn, stored)
                answers.append(stored.answer)
            except RealmError as error:
                self.last_ts = last_ts  # nothing of the unit happened
                return error_result(index, error, unit)
        if 0 < repeats < len(unit):
            self.last_ts = last_ts
            return error_result(repeats, IdConflict("part of this linked chain exists already",
                                                    id=unit[repeats].id), unit)  # fmt: skip
        txn.commit()
        return ("ok", answers)

    async def submit(self, units: list[list[TransferSpec]]) -> list[UnitResult]:
        """Apply units whose accounts are all on this shard; per unit
        ``("ok", answers)`` or ``("error", index, error)``. A repeat of a unit
        answers as the first time did."""
        results: list[UnitResult] = await self.execute("submit", units=units, at=self.clock.time())
        return results

    async def get_transfers(self, ids: list[str]) -> list[dict[str, Any] | None]:
        found: list[dict[str, Any] | None] = []
        for transfer_id in ids:
            stored = self.transfers.get(transfer_id)
            if stored is None or stored.state == "prepared":
                found.append(None)
            else:
                found.append(stored.public() | {"sides": list(stored.sides)})
        return found

    # --- pending timeouts ------------------------------------------------------

    def apply_expire(self, at: float) -> list[str]:
        """Void every local pending transfer whose timeout has passed."""
        at_ns = int(at * 1e9)
        expired = []
        while self.expiries and self.expiries[0][0] <= at_ns + EXPIRY_SLACK_NS:
            _, transfer_id = heapq.heappop(self.expiries)
            stored = self.transfers.get(transfer_id)
            if stored is None or stored.state != "pending" or stored.cross:
                continue
            txn = _Txn(self)
            stored = txn.transfer(transfer_id)
            assert stored is not None
            spec = stored.spec
            self._move(txn, spec, stored.sides, spec.amount, 0)
            stored.state = "expired"
            ts = self._stamp(at)
            for side in stored.sides:
                txn.record(stored, 0, side, kind="expired", ts=ts)
            txn.commit()
            expired.append(transfer_id)
        return expired

    def due(self) -> bool:
        now_ns = int(self.clock.time() * 1e9)
        return bool(self.expiries) and self.expiries[0][0] <= now_ns + EXPIRY_SLACK_NS

    async def expire_due(self) -> list[str]:
        """Void the local pending transfers whose time is up (the timer calls this)."""
        if not self.due():
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
        txn = _Txn(self)
        at_ns = int(at * 1e9)
        earlier: dict[tuple[str, str], int] = {}
        for index, spec, sides in legs:
            try:
                if self._claim_id(txn, spec, txid) is not None:
                    raise IdConflict("the transfer id is already used", id=spec.id)
                if spec.kind in (Kind.POSTED, Kind.PENDING):
                    self._reserve(txn, spec, sides, pending=True, earlier=earlier)
                    if spec.kind is Kind.POSTED:
                        for side in sides:
                            key = (txn.side_account_id(spec, side), side)
                            earlier[key] = earlier.get(key, 0) + spec.amount
                else:
                    pending = self._pending_for(txn, spec, sides, at_ns, txid)
                    pending.locked_by = txid
                txn.put(Stored(spec, sides, txid))
            except RealmError as error:
                return ("error", index, error)
        txn.commit()
        self.prepared[txid] = (coordinator, legs, at_ns)
        return None

    async def prepare(self, items: list[tuple[str, str, list[Leg]]]) -> list[Any]:
        """Per transaction ``(txid, coordinator name, legs)``: None once its legs
        are reserved and durable, or ``("error", index in the unit, error)``."""
        answers: list[Any] = await self.execute("prepare", items=items, at=self.clock.time())
        return answers

    def _resolve(self, txid: str, outcome: str, answers: Any) -> None:
        self.resolved[txid] = (outcome, answers)
        while len(self.resolved) > RESOLVED_KEPT:
            self.resolved.popitem(last=False)

    def apply_commit(self, txids: list[str], at: float) -> list[Any]:
        results: list[Any] = []
        for txid in txids:
            if txid in self.resolved:
                outcome, answers = self.resolved[txid]
                results.append(answers if outcome == "committed" else TransactionAborted(txid=txid))
                continue
            if txid not in self.prepared:
                # Never prepared here: the coordinator only commits after every
                # shard prepared, so this is a lost shard state; say so loudly.
                log.error("%s: commit of unknown transaction %s", self.name, txid)
                results.append(TransactionAborted("unknown transaction", txid=txid))
                continue
            _, legs, _ = self.prepared.pop(txid)
            txn = _Txn(self)
            at_ns = int(at * 1e9)
            answers = {}
            for _, spec, sides in legs:
                stored = self._finish(txn, spec, sides, at_ns, txid)
                stored.answer = answers[spec.id] = self._answer(txn, stored)
            txn.commit()
            self._resolve(txid, "committed", answers)
            results.append(answers)
        return results

    async def commit(self, txids: list[str]) -> list[Any]:
        """Post what each transaction reserved; per txid its answers by transfer id.

        Answers as soon as the commit is applied and queued for the journal,
        without waiting for the store: the coordinator's decision is durable
        already, so if this shard crashes before its record is, it comes back
        with the transaction prepared, asks, and commits it again."""
        results: list[Any] = self._apply_now("commit", txids=txids, at=self.clock.time())
        return results

    def _apply_now(self, op: str, **args: Any) -> Any:
        """``Durable.execute`` without waiting for the store (no idempotency key:
        the operation is idempotent itself). A failed write still crashes the
        actor, and nothing journaled after it is acknowledged."""
        result, _ = self.record(op, **args)
        return result

    def apply_abort(self, txids: list[str]) -> list[str]:
        results = []
        for txid in txids:
            if txid in self.resolved:
                results.append(self.resolved[txid][0])
                continue
            if txid in self.prepared:
                _, legs, _ = self.prepared.pop(txid)
                txn = _Txn(self)
                for _, spec, sides in legs:
                    stored = txn.transfer(spec.id)
                    assert stored is not None
                    stored.state = "dropped"
                    if spec.kind in (Kind.POSTED, Kind.PENDING):
                        self._move(txn, spec, sides, spec.amount, 0)
                    else:
                        pending = txn.transfer(spec.pending_id or "")
                        if pending is not None and pending.locked_by == txid:
                            pending.locked_by = None
                txn.commit()
            self._resolve(txid, "aborted", None)
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
        return [(t, c) for t, (c, _, at) in self.prepared.items() if at <= cutoff]

    async def totals(self) -> dict[str, Any]:
        """Sums over this shard's accounts (for checks and stats)."""
        keys = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
        sums = dict.fromkeys(keys, 0)
        for account in self.accounts.values():
            for key in keys:
                sums[key] += getattr(account, key)
        return {"accounts": len(self.accounts), "prepared": len(self.prepared), **sums}

    async def accounts_page(self, after: str = "", limit: int = 1_000) -> list[dict[str, Any]]:
        """Accounts by id, after ``after`` (for audits)."""
        ids = sorted(self.accounts)
        start = bisect_right(ids, after) if after else 0
        return [self.accounts[i].public() for i in ids[start : start + limit]]

    def __repr__(self) -> str:
        return (
            f"<LedgerShard {self.name} accounts={len(self.accounts)} "
            f"transfers={len(self.transfers)} prepared={len(self.prepared)}>"
        )


# --- the actor ----------------------------------------------------------------


def shard_name(index: int) -> str:
    return f"ledger-shard-{index}"


class _LedgerShardProcess(LedgerShard):
    async def __init__(self, settings: Any, name: str) -> None:  # type: ignore[misc]
        super().__init__(name=name)
        self.settings = settings
        from actors.runtime.supervision import recover

        self.restarts = await recover(self, settings, name)
        self._expirer = every(self.clock, settings.ledger_pending_sweep_s, self.expire_due)
        self._asker = every(self.clock, settings.ledger_in_doubt_after_s, self.ask_coordinators)
        self._coordinators: dict[str, Any] = {}

    async def ask_coordinators(self) -> None:
        """Ask the coordinator of each transaction in doubt for long how it ended."""
        from actors.ledger.coordinator import TxCoordinatorActor
        from actors.runtime.supervision import ActorRef

        doubtful = await self.in_doubt(self.settings.ledger_in_doubt_after_s)
        by_coordinator: dict[str, list[str]] = {}
        for txid, coordinator in doubtful:
            by_coordinator.setdefault(coordinator, []).append(txid)
        for coordinator, txids in by_coordinator.items():
            ref = self._coordinators.get(coordinator)
            if ref is None:
                ref = self._coordinators[coordinator] = ActorRef(
                    TxCoordinatorActor, coordinator, self.settings, coordinator,
                    namespace=self.settings.namespace,
                )  # fmt: skip
            outcomes = await ref.call("resolve", txids)
            commits = [t for t, outcome in zip(txids, outcomes, strict=True) if outcome == "commit"]
            aborts = [t for t, outcome in zip(txids, outcomes, strict=True) if outcome == "abort"]
            if commits:
                await self.commit(commits)
            if aborts:
                await self.abort(aborts)
            if commits or aborts:
                log.warning(
                    "%s resolved %d in-doubt transactions", self.name, len(commits + aborts)
                )

    async def ping(self) -> str:
        return self.name

    async def info(self) -> dict[str, Any]:
        import ray

        return {
            "name": self.name,
            "node_id": ray.get_runtime_context().get_node_id(),
            "restarts": self.restarts,
            "journal_commits": self.journal.commits,
            "journal_records": self.journal.records,
            **(await self.totals()),
        }


def _make_actor() -> Any:
    from actors.runtime.supervision import Restart, remote_actor

    return remote_actor(
        _LedgerShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
    )


#: Journaled; calls in flight at a crash are retried (every mutation is idempotent).
LedgerShardActor = _make_actor()


__all__ = [
    "Account",
    "LedgerShard",
    "LedgerShardActor",
    "Stored",
    "shard_name",
]
