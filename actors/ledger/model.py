"""The ledger's domain types (service 8): accounts, transfers and their rules.

Modelled on TigerBeetle. Amounts and balances are Python ints (never floats):
an amount is 1 .. 2**63 - 1 minor units, a balance field at most 2**128 - 1,
a ledger 1 .. 2**32 - 1, a code 0 .. 65535. Ids are client-chosen strings of
1 to 128 characters from ``[A-Za-z0-9._:-]``. Input becomes these frozen
types at the boundary (``apps/ledger.py``, ``LedgerClient``); actors get them
already checked and check again what depends on state.

Owners: an account belongs to the user who created it (``AccountSpec.owner``),
and a transfer carries the user who asks for it (``TransferSpec.owner``). The
debit account of a transfer must be its owner's; the credit account may be
anyone's, and of one that is not the owner's the transfer learns nothing but
whether it took the credit (``Books``). The empty owner is the system's (the
Python client used without one: tests, benchmarks, the ledger's own expiry
voids): it owns nothing and may use every account.

A balance may reach 2**128 - 1, beyond the 64-bit integers of MessagePack (the
journal's encoding, ``actors.runtime.codec``): where a record or snapshot
carries balances it carries them as decimal strings (``BalancesRecord``,
``AnswerRecord``), converted at the edge of the store and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from actors.ledger.errors import LinkedEventFailed
from actors.runtime.errors import InvalidInput, RealmError

MAX_AMOUNT = 2**63 - 1
MAX_BALANCE = 2**128 - 1
MAX_LEDGER = 2**32 - 1
MAX_CODE = 2**16 - 1
MAX_TIMEOUT_S = 2**32 - 1
#: Timestamps and time cursors are nanoseconds within 64 signed bits.
MAX_NS = 2**63 - 1
#: The system's owner: no user; may use every account (never a user id).
SYSTEM = ""
ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

#: The sides of a transfer: its debit account's and its credit account's.
DEBIT, CREDIT = "debit", "credit"
BOTH = (DEBIT, CREDIT)
#: An account's balance fields.
BALANCE_FIELDS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")

ACCOUNT_FLAGS = ("debits_must_not_exceed_credits", "credits_must_not_exceed_debits")
TRANSFER_FLAGS = ("linked", "pending", "post_pending_transfer", "void_pending_transfer")


class Kind(str, Enum):
    """What a transfer does."""

    #: Moves ``amount`` from debit to credit at once.
    POSTED = "posted"
    #: Reserves ``amount`` (pending balances) until posted, voided or expired.
    PENDING = "pending"
    #: Posts a pending transfer (all of it, or part: the rest is released).
    POST = "post_pending_transfer"
    #: Releases a pending transfer.
    VOID = "void_pending_transfer"


def check_id(value: Any, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidInput(f"{what} must be 1-128 characters of [A-Za-z0-9._:-]", field=what)
    return value


def check_int(value: Any, what: str, low: int, high: int) -> int:
    """An exact integer in [low, high]; bools, floats and strings are refused."""
    if type(value) is not int or not low <= value <= high:
        raise InvalidInput(f"{what} must be an integer from {low} to {high}", field=what)
    return value


@dataclass(frozen=True)
class AccountSpec:
    id: str
    ledger: int
    code: int = 0
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    #: The user it belongs to (``SYSTEM`` for accounts made without one).
    owner: str = SYSTEM

    def check(self) -> AccountSpec:
        check_id(self.id)
        check_int(self.ledger, "ledger", 1, MAX_LEDGER)
        check_int(self.code, "code", 0, MAX_CODE)
        if self.debits_must_not_exceed_credits and self.credits_must_not_exceed_debits:
            raise InvalidInput("an account may not have both balance flags", field="flags")
        if not isinstance(self.owner, str):
            raise InvalidInput("an owner is a string", field="owner")
        return self

    @property
    def flags(self) -> list[str]:
        return [flag for flag in ACCOUNT_FLAGS if getattr(self, flag)]


@dataclass(frozen=True)
class TransferSpec:
    """One transfer as asked for. For a post or void, the accounts, ledger and
    (unless posting part) amount are those of the pending transfer: the client
    fills them in before routing (``with_pending``)."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    ledger: int
    code: int = 0
    kind: Kind = Kind.POSTED
    linked: bool = False
    pending_id: str | None = None
    #: Seconds a pending transfer waits to be posted or voided; 0: no timeout.
    timeout_s: int = 0
    #: A void made by the ledger itself when the timeout passed (never from clients).
    expiry: bool = False
    #: Who asks for it: its debit account must be theirs (``SYSTEM``: any account).
    owner: str = SYSTEM

    def check(self) -> TransferSpec:
        check_id(self.id)
        check_int(self.code, "code", 0, MAX_CODE)
        if not isinstance(self.owner, str):
            raise InvalidInput("an owner is a string", field="owner")
        if self.kind in (Kind.POST, Kind.VOID):
            check_id(self.pending_id, "pending_id")
            if self.pending_id == self.id:
                raise InvalidInput("a transfer cannot post or void itself", field="pending_id")
            if self.timeout_s:
                raise InvalidInput("only a pending transfer has a timeout", field="timeout_s")
            return self  # the rest comes from the pending transfer
        if self.pending_id is not None:
            raise InvalidInput("pending_id is only for posting or voiding", field="pending_id")
        check_id(self.debit_account_id, "debit_account_id")
        check_id(self.credit_account_id, "credit_account_id")
        if self.debit_account_id == self.credit_account_id:
            raise InvalidInput("the debit and credit accounts must differ", field="accounts")
        check_int(self.amount, "amount", 1, MAX_AMOUNT)
        check_int(self.ledger, "ledger", 1, MAX_LEDGER)
        check_int(self.timeout_s, "timeout_s", 0, MAX_TIMEOUT_S)
        if self.timeout_s and self.kind is not Kind.PENDING:
            raise InvalidInput("only a pending transfer has a timeout", field="timeout_s")
        return self

    def with_pending(self, pending: dict[str, Any]) -> TransferSpec:
        """This post/void with the pending transfer's accounts, ledger and amount filled in."""
        given = {
            "debit_account_id": self.debit_account_id,
            "credit_account_id": self.credit_account_id,
            "ledger": self.ledger,
        }
        for field, value in given.items():
            if value and value != pending[field]:
                raise InvalidInput(f"{field} differs from the pending transfer's", field=field)
        amount = self.amount or pending["amount"]
        if self.kind is Kind.VOID and amount != pending["amount"]:
            raise InvalidInput("a void releases the whole pending amount", field="amount")
        check_int(amount, "amount", 1, MAX_AMOUNT)
        return replace(
            self,
            debit_account_id=pending["debit_account_id"],
            credit_account_id=pending["credit_account_id"],
            ledger=pending["ledger"],
            amount=amount,
        )

    @property
    def flags(self) -> list[str]:
        flags = ["linked"] if self.linked else []
        if self.kind is not Kind.POSTED:
            flags.append(self.kind.value)
        return flags


def chains(specs: list[TransferSpec]) -> list[list[TransferSpec]]:
    """Split a batch into units: a linked chain (each but the last has ``linked``)
    or a single transfer. An unclosed chain at the end is refused."""
    units: list[list[TransferSpec]] = []
    current: list[TransferSpec] = []
    for spec in specs:
        current.append(spec)
        if not spec.linked:
            units.append(current)
            current = []
    if current:
        raise InvalidInput("the last transfer of a batch may not be linked", field="linked")
    ids = [spec.id for spec in specs]
    if len(set(ids)) != len(ids):
        raise InvalidInput("a batch may not repeat a transfer id", field="id")
    return units


#: A leg of a unit: (index in the unit, transfer, the sides of it on one shard).
Leg = tuple[int, TransferSpec, tuple[str, ...]]


#: What applying a unit answers: ("ok", [answer per transfer]) or ("error", index, error).
UnitResult = tuple[Any, ...]


def unit_outcomes(unit: list[TransferSpec], result: UnitResult) -> list[Any]:
    """Per transfer: its answer, or a ``RealmError`` (the failed one's own error,
    ``LinkedEventFailed`` for the others of its chain)."""
    if result[0] == "ok":
        return list(result[1])
    _, index, error = result
    return [
        error
        if i == index
        else LinkedEventFailed(transfer_id=spec.id, failed_transfer_id=unit[index].id)
        for i, spec in enumerate(unit)
    ]


def error_result(index: int, error: RealmError, unit: list[TransferSpec]) -> UnitResult:
    details = {"transfer_id": unit[index].id, **error.details} if len(unit) > 1 else error.details
    error.details = details
    return ("error", index, error)


# --- as records and snapshots keep them -------------------------------------------


@dataclass(frozen=True, slots=True)
class BalancesRecord:
    """An account's balances as the store keeps them: decimal strings, because a
    balance may reach 2**128 - 1 and MessagePack holds 64-bit integers at most."""

    id: str
    debits_pending: str
    debits_posted: str
    credits_pending: str
    credits_posted: str

    @classmethod
    def of(cls, balances: dict[str, Any]) -> BalancesRecord:
        """From ``{"id", "debits_pending", ...}`` with int balances."""
        return cls(
            balances["id"],
            str(balances["debits_pending"]),
            str(balances["debits_posted"]),
            str(balances["credits_pending"]),
            str(balances["credits_posted"]),
        )

    def public(self) -> dict[str, Any]:
        """``{"id", "debits_pending", ...}`` with int balances again."""
        return {
            "id": self.id,
            "debits_pending": int(self.debits_pending),
            "debits_posted": int(self.debits_posted),
            "credits_pending": int(self.credits_pending),
            "credits_posted": int(self.credits_posted),
        }


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """A transfer's answer (``{"transfer", "debit_account", "credit_account"}``)
    as a record keeps it: balances as ``BalancesRecord``, None for a side the
    answer does not have."""

    #: The transfer's public fields: plain data, every int within 64 bits
    #: (amounts, ledgers, codes, timeouts, ns timestamps).
    transfer: dict[str, Any]
    debit_account: BalancesRecord | None
    credit_account: BalancesRecord | None

    @classmethod
    def of(cls, answer: dict[str, Any]) -> AnswerRecord:
        debit, credit = answer["debit_account"], answer["credit_account"]
        return cls(
            answer["transfer"],
            None if debit is None else BalancesRecord.of(debit),
            None if credit is None else BalancesRecord.of(credit),
        )

    def public(self) -> dict[str, Any]:
        debit, credit = self.debit_account, self.credit_account
        return {
            "transfer": dict(self.transfer),
            "debit_account": None if debit is None else debit.public(),
            "credit_account": None if credit is None else credit.public(),
        }


__all__ = [
    "ACCOUNT_FLAGS",
    "BALANCE_FIELDS",
    "BOTH",
    "CREDIT",
    "DEBIT",
    "MAX_AMOUNT",
    "MAX_BALANCE",
    "MAX_NS",
    "SYSTEM",
    "TRANSFER_FLAGS",
    "AccountSpec",
    "AnswerRecord",
    "BalancesRecord",
    "Kind",
    "Leg",
    "TransferSpec",
    "UnitResult",
    "chains",
    "check_id",
    "check_int",
    "error_result",
    "unit_outcomes",
]
