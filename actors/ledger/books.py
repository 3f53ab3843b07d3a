"""The books of one ledger shard: its accounts, transfers and their history, and
the rules that change them.

``Books`` is plain state and plain rules: it knows nothing of journals, actors
or the messages of two-phase commit. ``LedgerShard`` (``actors.ledger.shard``)
journals each operation and calls the rule here that applies it, so replaying
the journal calls the same rules again.

Every change goes through a ``_Txn``, a copy-on-write view: a unit's changes
land in the books only if all of it succeeds, so a refusal changes nothing.

Balance rules are TigerBeetle's: with ``debits_must_not_exceed_credits`` an
account's debits (pending + posted + this amount) may not exceed its posted
credits (``insufficient_funds``), and symmetrically for
``credits_must_not_exceed_debits`` (``exceeds_debits``).

Owners: a transfer's debit account must belong to the transfer's owner (or
the transfer is the system's); one that does not is ``account_not_found``,
exactly like a missing one. Its credit account may be anyone's; when it is not
the owner's, the transfer learns nothing of it beyond whether it took the
credit: a refusal that comes from that account (another ledger, its flag, an
overflow) is ``account_not_found`` as well, and the answer leaves its balances
out. A post or void is its pending transfer's owner's alone.

Every transfer gets a timestamp in integer nanoseconds, unique and increasing
per shard; history pages and time ranges use them. Each history entry holds
the account's balances right after it, which is also how a repeated transfer
gets its first answer back (``answer_of``): keeping every answer as well
would double what each transfer costs in memory and in snapshots.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, NoReturn

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
    TransactionInDoubt,
)
from actors.ledger.model import (
    BALANCE_FIELDS,
    BOTH,
    CREDIT,
    DEBIT,
    MAX_BALANCE,
    SYSTEM,
    AccountSpec,
    BalancesRecord,
    Kind,
    Leg,
    TransferSpec,
    UnitResult,
    error_result,
)
from actors.runtime.errors import InvalidInput, RealmError

#: Timeouts are kept to the millisecond: timestamps are unique nanoseconds
#: derived from float seconds, so a deadline may sit a few ns after its second.
EXPIRY_SLACK_NS = 1_000_000
#: Fields of a history entry (balances are the account's right after the entry).
HISTORY_FIELDS = ("timestamp", "transfer_id", "side", "kind", "amount", *BALANCE_FIELDS)
#: A history entry: timestamp, transfer id, side, kind, amount, then the balances.
HistoryEntry = tuple[int, str, str, str, int, int, int, int, int]
#: A history entry as a snapshot keeps it: balances as decimal strings (they
#: may reach 2**128 - 1; MessagePack holds 64-bit integers at most).
HistoryRecord = tuple[int, str, str, str, int, str, str, str, str]

#: Per side of an account: its pending and posted fields, the field its flag
#: bounds them by (and that field's side), the flag, and the refusal.
_SIDES: dict[str, tuple[str, str, str, str, str, type[RealmError]]] = {
    DEBIT: ("debits_pending", "debits_posted", "credits_posted", CREDIT,
            "debits_must_not_exceed_credits", InsufficientFunds),
    CREDIT: ("credits_pending", "credits_posted", "debits_posted", DEBIT,
             "credits_must_not_exceed_debits", ExceedsDebits),
}  # fmt: skip


def account_of(spec: TransferSpec, side: str) -> str:
    """The id of the account on ``side`` of ``spec``."""
    return spec.debit_account_id if side == DEBIT else spec.credit_account_id


@dataclass(slots=True)
class AccountRecord:
    """An account as a snapshot keeps it."""

    spec: AccountSpec
    timestamp: int
    balances: BalancesRecord


@dataclass(slots=True)
class Account:
    spec: AccountSpec
    timestamp: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    def copy(self) -> Account:
        # field by field: ten times faster than copy.copy, and a transfer makes two
        return Account(
            self.spec, self.timestamp, self.debits_pending, self.debits_posted,
            self.credits_pending, self.credits_posted,
        )  # fmt: skip

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

    def record(self) -> AccountRecord:
        return AccountRecord(self.spec, self.timestamp, BalancesRecord.of(self.balances()))

    @classmethod
    def from_record(cls, record: AccountRecord) -> Account:
        balances = record.balances.public()
        return cls(record.spec, record.timestamp, *(balances[f] for f in BALANCE_FIELDS))


@dataclass(slots=True)
class Stored:
    """A transfer as this shard keeps it (for a cross-shard one: this shard's
    sides). Every field is plain data, so snapshots hold it as it is."""

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

    def copy(self) -> Stored:
        # field by field: ten times faster than copy.copy
        return Stored(
            self.spec, self.sides, self.txid, self.timestamp, self.state, self.expires_at,
            self.locked_by,
        )  # fmt: skip

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


@dataclass(slots=True)
class BooksState:
    """The books as a snapshot keeps them."""

    accounts: list[AccountRecord]
    transfers: dict[str, Stored]
    history: dict[str, list[HistoryRecord]]
    expiries: list[tuple[int, str]]
    last_ts: int


class _Txn:
    """Copy-on-write view of the books: a unit's changes land in them only if
    all of it succeeds, so a refusal changes nothing."""

    def __init__(self, books: Books) -> None:
        self.books = books
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Stored] = {}
        self.history: list[tuple[str, HistoryEntry]] = []
        self.expiries: list[tuple[int, str]] = []

    def account(self, account_id: str) -> Account:
        if account_id not in self.accounts:
            found = self.books.accounts.get(account_id)
            if found is None:
                raise AccountNotFound(account_id=account_id)
            self.accounts[account_id] = found.copy()
        return self.accounts[account_id]

    def transfer(self, transfer_id: str) -> Stored | None:
        if transfer_id in self.transfers:
            return self.transfers[transfer_id]
        found = self.books.transfers.get(transfer_id)
        if found is not None:
            self.transfers[transfer_id] = found = found.copy()
        return found

    def put(self, stored: Stored) -> None:
        self.transfers[stored.spec.id] = stored

    def note(
        self, stored: Stored, amount: int, side: str, *, kind: str | None = None, ts: int = 0
    ) -> None:
        """A history entry for the account on ``side``, with its balances as they are now."""
        spec, account_id = stored.spec, account_of(stored.spec, side)
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

    def commit(self) -> None:
        books = self.books
        books.accounts.update(self.accounts)
        for transfer_id, stored in self.transfers.items():
            if stored.state == "dropped":
                books.transfers.pop(transfer_id, None)
            else:
                books.transfers[transfer_id] = stored
        for account_id, entry in self.history:
            books.history.setdefault(account_id, []).append(entry)
        for item in self.expiries:
            heapq.heappush(books.expiries, item)


class Books:
    """Accounts, transfers and history of one shard, and the rules; see the module docstring."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Stored] = {}
        #: account id -> its entries, by time.
        self.history: dict[str, list[HistoryEntry]] = {}
        #: (expires at ns, transfer id) of local pending transfers with a timeout.
        self.expiries: list[tuple[int, str]] = []
        self.last_ts = 0
        #: owner -> how many of its accounts are here (derived from ``accounts``).
        self.owned: dict[str, int] = {}

    # --- as a snapshot keeps them ----------------------------------------------

    def state(self) -> BooksState:
        history = {
            account_id: [
                (ts, tid, side, kind, amount, str(dp), str(dpo), str(cp), str(cpo))
                for ts, tid, side, kind, amount, dp, dpo, cp, cpo in entries
            ]
            for account_id, entries in self.history.items()
        }
        accounts = [account.record() for account in self.accounts.values()]
        return BooksState(accounts, self.transfers, history, self.expiries, self.last_ts)

    @classmethod
    def restore(cls, state: BooksState) -> Books:
        books = cls()
        books.accounts = {r.spec.id: Account.from_record(r) for r in state.accounts}
        books.transfers = state.transfers
        books.history = {
            account_id: [
                (ts, tid, side, kind, amount, int(dp), int(dpo), int(cp), int(cpo))
                for ts, tid, side, kind, amount, dp, dpo, cp, cpo in entries
            ]
            for account_id, entries in state.history.items()
        }
        books.expiries, books.last_ts = state.expiries, state.last_ts
        for account in books.accounts.values():
            books._own(account.spec.owner)
        return books

    def _own(self, owner: str) -> None:
        self.owned[owner] = self.owned.get(owner, 0) + 1

    def size(self) -> int:
        """Roughly the items a snapshot holds (history: an entry per side)."""
        return len(self.accounts) + 2 * len(self.transfers)

    def stamp(self, at: float) -> int:
        """A unique, increasing timestamp (ns) no earlier than ``at``."""
        self.last_ts = max(int(at * 1e9), self.last_ts + 1)
        return self.last_ts

    # --- accounts --------------------------------------------------------------

    def create_accounts(self, specs: list[AccountSpec], at: float) -> list[Any]:
        answers: list[Any] = []
        for spec in specs:
            existing = self.accounts.get(spec.id)
            if existing is not None:
                if existing.spec != spec:
                    answers.append(IdConflict("the account exists with another body", id=spec.id))
                else:
                    answers.append(existing.public())
                continue
            account = Account(spec, self.stamp(at))
            self.accounts[spec.id] = account
            self._own(spec.owner)
            answers.append(account.public())
        return answers

    def census(self, owner: str, ids: list[str]) -> tuple[int, int]:
        """How many accounts ``owner`` has here, and how many of ``ids`` are free here."""
        return self.owned.get(owner, 0), sum(account_id not in self.accounts for account_id in ids)

    def owns(self, owner: str | None, account_id: str) -> bool:
        """Whether ``account_id`` exists here and ``owner`` may see it (None: anyone)."""
        account = self.accounts.get(account_id)
        return account is not None and (owner is None or account.spec.owner == owner)

    def get_accounts(self, ids: list[str], owner: str | None) -> list[dict[str, Any] | None]:
        """Each account, or None if it is missing or not ``owner``'s (None: anyone's)."""
        return [self.accounts[i].public() if self.owns(owner, i) else None for i in ids]

    def history_page(
        self,
        account_id: str,
        *,
        since_ns: int,
        until_ns: int | None,
        after_ns: int | None,
        limit: int,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Entries of ``account_id`` with since <= timestamp < until, oldest first,
        after the cursor ``after_ns``; ``next_after_ns`` continues (None at the end).
        Only ``owner``'s account (None: anyone's); another's is ``AccountNotFound``."""
        if not self.owns(owner, account_id):
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

    # --- the rules ---------------------------------------------------------------

    def _check_debit_owner(self, spec: TransferSpec, sides: tuple[str, ...]) -> None:
        """A transfer's debit account must be its owner's: another's is answered
        exactly as a missing account is."""
        owner = spec.owner
        if owner != SYSTEM and DEBIT in sides and not self.owns(owner, spec.debit_account_id):
            raise AccountNotFound(account_id=spec.debit_account_id)

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

    @staticmethod
    def _reserve(
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
            account = txn.account(account_of(spec, side))
            if account.spec.ledger != spec.ledger:
                _refuse(spec, account, LedgerMismatch(
                    account_id=account.spec.id, account_ledger=account.spec.ledger,
                    transfer_ledger=spec.ledger,
                ))  # fmt: skip
        for side in sides:
            account = txn.account(account_of(spec, side))
            pending_field, posted_field, bound_field, other, flag, refusal = _SIDES[side]
            own = getattr(account, pending_field) + getattr(account, posted_field) + amount
            bound = getattr(account, bound_field) + earlier.get((account.spec.id, other), 0)
            if getattr(account.spec, flag) and own > bound:
                available = bound - own + amount
                error = refusal(account_id=account.spec.id, available=available, amount=amount)
                _refuse(spec, account, error)
            field = pending_field if pending else posted_field
            setattr(account, field, getattr(account, field) + amount)
            if own > MAX_BALANCE:
                _refuse(spec, account, BalanceOverflow(account_id=account.spec.id))

    @staticmethod
    def _move(
        txn: _Txn, spec: TransferSpec, sides: tuple[str, ...], release: int, post: int
    ) -> None:
        """Take ``release`` out of pending and put ``post`` into posted, on each side."""
        for side in sides:
            account = txn.account(account_of(spec, side))
            pending_field, posted_field = _SIDES[side][:2]
            setattr(account, pending_field, getattr(account, pending_field) - release)
            setattr(account, posted_field, getattr(account, posted_field) + post)

    @staticmethod
    def _pending_for(
        txn: _Txn, spec: TransferSpec, sides: tuple[str, ...], at_ns: int, txid: str | None
    ) -> Stored:
        """The pending transfer a post/void names, checked to be open and to match."""
        assert spec.pending_id is not None
        pending = txn.transfer(spec.pending_id)
        if pending is None or pending.spec.kind is not Kind.PENDING or pending.state == "prepared":
            raise PendingTransferNotFound(pending_id=spec.pending_id)
        if spec.owner != SYSTEM and pending.spec.owner != spec.owner:
            raise PendingTransferNotFound(pending_id=spec.pending_id)  # not theirs to close
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
        stored.timestamp = self.stamp(at_ns / 1e9)
        stored.state = "pending" if spec.kind is Kind.PENDING else "posted"
        if spec.kind is Kind.PENDING and spec.timeout_s:
            stored.expires_at = stored.timestamp + spec.timeout_s * 1_000_000_000
            if not stored.cross:
                txn.expiries.append((stored.expires_at, spec.id))
        amount = spec.amount if spec.kind is not Kind.VOID else 0
        for side in sides:
            txn.note(stored, amount, side)
        txn.put(stored)
        return stored

    @staticmethod
    def _answer(txn: _Txn, stored: Stored) -> dict[str, Any]:
        """What a transfer just applied answers: itself and the balances of its
        accounts on this shard right after it (of those its owner may see)."""
        answer: dict[str, Any] = {
            "transfer": stored.public(),
            "debit_account": None,
            "credit_account": None,
        }
        for side in stored.sides:
            account = txn.account(account_of(stored.spec, side))
            if _shown(stored.spec, account):
                answer[f"{side}_account"] = account.balances()
        return answer

    def answer_of(self, stored: Stored) -> dict[str, Any]:
        """The answer ``stored`` got when it was applied, again: the transfer as it
        was then, and the balances its history entries hold."""
        first_state = "pending" if stored.spec.kind is Kind.PENDING else "posted"
        answer: dict[str, Any] = {
            "transfer": stored.public() | {"state": first_state},
            "debit_account": None,
            "credit_account": None,
        }
        for side in stored.sides:
            account_id = account_of(stored.spec, side)
            if not _shown(stored.spec, self.accounts[account_id]):
                continue
            entries = self.history[account_id]
            entry = entries[bisect_left(entries, (stored.timestamp,))]
            balances = dict(zip(BALANCE_FIELDS, entry[5:], strict=True))
            answer[f"{side}_account"] = {"id": account_id, **balances}
        return answer

    # --- units applied here --------------------------------------------------------

    def apply_unit(self, unit: list[TransferSpec], at: float) -> UnitResult:
        """A transfer or linked chain whose accounts are all here, all or nothing;
        a repeat of an applied unit answers as it did."""
        txn = _Txn(self)
        at_ns = int(at * 1e9)
        last_ts = self.last_ts
        answers = []
        repeats = 0
        for index, spec in enumerate(unit):
            try:
                self._check_debit_owner(spec, BOTH)
                existing = self._claim_id(txn, spec, None)
                if existing is not None:
                    repeats += 1
                    answers.append(self.answer_of(existing))
                    continue
                if repeats:
                    raise IdConflict("part of this linked chain exists already", id=spec.id)
                stored = self._finish(txn, spec, BOTH, at_ns, None)
                answers.append(self._answer(txn, stored))
            except RealmError as error:
                self.last_ts = last_ts  # nothing of the unit happened
                return error_result(index, error, unit)
        if 0 < repeats < len(unit):
            self.last_ts = last_ts
            return error_result(repeats, IdConflict("part of this linked chain exists already",
                                                    id=unit[repeats].id), unit)  # fmt: skip
        txn.commit()
        return ("ok", answers)

    # --- the legs of cross-shard transactions ----------------------------------------

    def prepare_legs(self, txid: str, legs: list[Leg], at: float) -> UnitResult | None:
        """Check ``legs`` and reserve them (a post or void locks its pending
        transfer): None, or ``("error", index in the unit, error)`` and nothing
        changed, or ``("repeat", answers by transfer id)`` when an earlier
        attempt of the same unit committed every leg here (see ``repeat_of``)."""
        repeat = self.repeat_of(legs)
        if repeat is not None:
            return repeat
        txn = _Txn(self)
        at_ns = int(at * 1e9)
        earlier: dict[tuple[str, str], int] = {}
        for index, spec, sides in legs:
            try:
                self._check_debit_owner(spec, sides)
                if self._claim_id(txn, spec, txid) is not None:
                    raise IdConflict("the transfer id is already used", id=spec.id)
                if spec.kind in (Kind.POSTED, Kind.PENDING):
                    self._reserve(txn, spec, sides, pending=True, earlier=earlier)
                    if spec.kind is Kind.POSTED:
                        for side in sides:
                            key = (account_of(spec, side), side)
                            earlier[key] = earlier.get(key, 0) + spec.amount
                else:
                    pending = self._pending_for(txn, spec, sides, at_ns, txid)
                    pending.locked_by = txid
                txn.put(Stored(spec, sides, txid))
            except RealmError as error:
                return ("error", index, error)
        txn.commit()
        return None

    def repeat_of(self, legs: list[Leg]) -> UnitResult | None:
        """A unit's legs seen again after its coordinator forgot the transaction
        that committed them: ``("repeat", their first answers by transfer id)``
        if every leg is here, committed, with the same body and sides; None if
        none is (the legs are checked as new ones); ``id_conflict`` if only
        some are, as for a chain applied here (``apply_unit``)."""
        found = [self.transfers.get(spec.id) for _, spec, _ in legs]
        same = [
            stored is not None and stored.state != "prepared" and stored.spec == spec
            and stored.sides == sides
            for stored, (_, spec, sides) in zip(found, legs, strict=True)
        ]  # fmt: skip
        if not any(same):
            return None
        if not all(same):
            index, spec, _ = legs[same.index(False)]
            return ("error", index, IdConflict("part of this linked chain exists already",
                                               id=spec.id))  # fmt: skip
        return ("repeat", {s.spec.id: self.answer_of(s) for s in found if s is not None})

    def commit_legs(self, txid: str, legs: list[Leg], at: float) -> dict[str, Any]:
        """Post what ``prepare_legs`` reserved; the answers by transfer id."""
        txn = _Txn(self)
        at_ns = int(at * 1e9)
        answers = {}
        for _, spec, sides in legs:
            stored = self._finish(txn, spec, sides, at_ns, txid)
            answers[spec.id] = self._answer(txn, stored)
        txn.commit()
        return answers

    def abort_legs(self, txid: str, legs: list[Leg]) -> None:
        """Release what ``prepare_legs`` reserved and forget its transfers."""
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

    # --- pending timeouts ------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a local pending transfer's timeout has passed by ``now``."""
        now_ns = int(now * 1e9)
        return bool(self.expiries) and self.expiries[0][0] <= now_ns + EXPIRY_SLACK_NS

    def expire(self, at: float) -> list[str]:
        """Void every local pending transfer whose timeout has passed by ``at``."""
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
            ts = self.stamp(at)
            for side in stored.sides:
                txn.note(stored, 0, side, kind="expired", ts=ts)
            txn.commit()
            expired.append(transfer_id)
        return expired

    # --- reads -----------------------------------------------------------------------

    def get_transfers(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """Each transfer as this shard knows it, with its ``sides`` here and its
        ``parties`` (its owner and the owners of its accounts here: who may see it)."""
        found: list[dict[str, Any] | None] = []
        for transfer_id in ids:
            stored = self.transfers.get(transfer_id)
            if stored is None or stored.state == "prepared":
                found.append(None)
                continue
            parties = {stored.spec.owner}
            for side in stored.sides:
                parties.add(self.accounts[account_of(stored.spec, side)].spec.owner)
            found.append(
                stored.public() | {"sides": list(stored.sides), "parties": sorted(parties)}
            )
        return found

    def committed_by(self, txid: str) -> dict[str, Any]:
        """The answers of the transfers transaction ``txid`` committed here, found
        by looking through every transfer (for a transaction forgotten since)."""
        return {
            stored.spec.id: self.answer_of(stored)
            for stored in self.transfers.values()
            if stored.txid == txid and stored.state != "prepared"
        }

    def totals(self) -> dict[str, Any]:
        """Sums over the accounts (for checks and stats)."""
        sums = dict.fromkeys(BALANCE_FIELDS, 0)
        for account in self.accounts.values():
            for key in BALANCE_FIELDS:
                sums[key] += getattr(account, key)
        return {"accounts": len(self.accounts), **sums}

    def accounts_page(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Accounts by id, after ``after`` (for audits)."""
        ids = sorted(self.accounts)
        start = bisect_right(ids, after) if after else 0
        return [self.accounts[i].public() for i in ids[start : start + limit]]

    def __repr__(self) -> str:
        return f"<Books accounts={len(self.accounts)} transfers={len(self.transfers)}>"


def _shown(spec: TransferSpec, account: Account) -> bool:
    """Whether the owner of ``spec`` may see ``account``'s balances."""
    return spec.owner == SYSTEM or account.spec.owner == spec.owner


def _refuse(spec: TransferSpec, account: Account, refusal: RealmError) -> NoReturn:
    """Raise ``refusal``; for an account the transfer's owner may not see, raise
    what a missing account raises instead, so a refusal tells nothing of it."""
    if not _shown(spec, account):
        raise AccountNotFound(account_id=account.spec.id)
    raise refusal


__all__ = ["HISTORY_FIELDS", "Account", "Books", "BooksState", "Stored", "account_of"]
