"""Errors of the ledger service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, InvalidInput, NotFound, Unavailable


class AccountNotFound(NotFound):
    """No such account."""

    code = "account_not_found"


class TransferNotFound(NotFound):
    """No such transfer."""

    code = "transfer_not_found"


class PendingTransferNotFound(NotFound):
    """The pending transfer to post or void does not exist (or is not pending)."""

    code = "pending_transfer_not_found"


class IdConflict(Conflict):
    """The id is already used by an account or transfer with a different body."""

    code = "id_conflict"


class PendingTransferClosed(Conflict):
    """The pending transfer was already posted, voided or expired (see state)."""

    code = "pending_transfer_closed"


class PendingTransferBusy(Conflict):
    """Another post or void of this pending transfer is under way; retry."""

    code = "pending_transfer_busy"


class InsufficientFunds(InvalidInput):
    """The debit account's debits would exceed its credits (debits_must_not_exceed_credits)."""

    code = "insufficient_funds"


class ExceedsDebits(InvalidInput):
    """The credit account's credits would exceed its debits (credits_must_not_exceed_debits)."""

    code = "exceeds_debits"


class LedgerMismatch(InvalidInput):
    """The transfer's ledger differs from an account's ledger."""

    code = "ledger_mismatch"


class ExceedsPendingAmount(InvalidInput):
    """The amount to post is more than the pending transfer's amount."""

    code = "exceeds_pending_amount"


class BalanceOverflow(InvalidInput):
    """A balance would go over 2**128 - 1."""

    code = "overflow"


class LinkedEventFailed(InvalidInput):
    """Another transfer of the same linked chain failed, so none was applied."""

    code = "linked_event_failed"


class TransactionAborted(Conflict):
    """The cross-shard transaction was aborted before this shard prepared it."""

    code = "transaction_aborted"


class TransactionInDoubt(Unavailable):
    """An earlier attempt of this transfer is prepared and awaits its outcome; retry shortly."""

    code = "transaction_in_doubt"
