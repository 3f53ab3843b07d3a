"""One error tree for all of Realm.

Actors raise these; Ray carries them to the caller intact (the fields survive
pickling), and one HTTP handler in ``apps.errors`` turns any of them into the
error envelope ``{"error": {"code", "message", "details"}}``.
Every error has a stable ``code`` (for clients) and an HTTP ``status``.
"""

from __future__ import annotations

from typing import Any, ClassVar


def _rebuild(cls: type[RealmError], message: str, details: dict[str, Any]) -> RealmError:
    error = cls.__new__(cls)
    RealmError.__init__(error, message, **details)
    return error


class RealmError(Exception):
    """Root of every error Realm raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, /, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.details.items())
        return f"{type(self).__name__}({self.message!r}{', ' if fields else ''}{fields})"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


# --- client errors (4xx) ---------------------------------------------------


class InvalidInput(RealmError):
    """The request is malformed or breaks a rule."""

    code = "invalid_input"
    status = 422


class NotFound(RealmError):
    """The thing asked for does not exist."""

    code = "not_found"
    status = 404


class Conflict(RealmError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class TooLarge(RealmError):
    """The request is over a size limit."""

    code = "too_large"
    status = 413


class KeyTooLong(InvalidInput):
    """The key is longer than the limit."""

    code = "key_too_long"


class ValueTooLarge(TooLarge):
    """The value is larger than the limit."""

    code = "value_too_large"


class BatchTooLarge(TooLarge):
    """The batch has more items than the limit."""

    code = "batch_too_large"


class KeyNotFound(NotFound):
    """No such key."""

    code = "key_not_found"


class NotAnInteger(Conflict):
    """The stored value is not an integer."""

    code = "not_an_integer"


class LoaderFailed(RealmError):
    """The loader of a get-or-compute raised; nothing was cached."""

    code = "loader_failed"
    status = 502


class LoadTimedOut(RealmError):
    """The loader of a get-or-compute did not finish within its lease."""

    code = "load_timed_out"
    status = 504


class NoReply(RealmError):
    """Nobody answered a pub/sub request in time."""

    code = "no_reply"
    status = 504


class Unauthorized(RealmError):
    """Missing, malformed, unknown, expired or revoked credentials."""

    code = "unauthorized"
    status = 401


class InvalidCredentials(Unauthorized):
    """Wrong username or password."""

    code = "invalid_credentials"


class Forbidden(RealmError):
    """The caller may not do this."""

    code = "forbidden"
    status = 403


class TooManyAttempts(RealmError):
    """Too many failed attempts; retry later (see retry_after_s)."""

    code = "too_many_attempts"
    status = 429


class UsernameTaken(Conflict):
    """That username is taken."""

    code = "username_taken"


class WrongPassword(Forbidden):
    """The current password is wrong."""

    code = "wrong_password"


class InvalidResetToken(InvalidInput):
    """The password-reset token is unknown, used or expired."""

    code = "invalid_reset_token"


# --- server-side faults (5xx) ---------------------------------------------


class Unavailable(RealmError):
    """A dependency is not answering; the request may be retried."""

    code = "unavailable"
    status = 503


class StoreUnavailable(Unavailable):
    """The durable store did not take the write; it was not acknowledged."""

    code = "store_unavailable"


class JournalConflict(Unavailable):
    """Another writer appended to this journal: this actor incarnation is stale."""

    code = "journal_conflict"


# --- resources (service 11) ------------------------------------------------


class PoolNotFound(NotFound):
    """No such resource pool."""

    code = "pool_not_found"


class GroupNotFound(NotFound):
    """No such group of pools."""

    code = "group_not_found"


class PoolExists(Conflict):
    """A pool (or group) of that name exists with a different definition."""

    code = "pool_exists"


class LeaseNotFound(NotFound):
    """No lease with that fencing token in this pool."""

    code = "lease_not_found"


class LeaseExpired(Conflict):
    """The lease has ended (expired or released); acquire again."""

    code = "lease_expired"


class NotLeaseHolder(Forbidden):
    """The lease belongs to another owner."""

    code = "not_lease_holder"


class AcquireTimedOut(Conflict):
    """The resource was not granted before the wait ran out."""

    code = "acquire_timed_out"


class AcquireCancelled(Conflict):
    """The wait was cancelled before the resource was granted."""

    code = "acquire_cancelled"


class QuotaExceeded(RealmError):
    """The owner holds (or waits for) as many grants of this pool as its quota allows."""

    code = "quota_exceeded"
    status = 429


class QueueFull(RealmError):
    """The pool's wait queue is full."""

    code = "queue_full"
    status = 429


# --- task queue (service 2) -----------------------------------------------


class JobNotFound(NotFound):
    """No such job in this queue (it may have been pruned)."""

    code = "job_not_found"


class UnknownHandler(InvalidInput):
    """The handler does not import, is not callable, or is outside the allowed modules."""

    code = "unknown_handler"


class JobArgsTooLarge(TooLarge):
    """The job's JSON arguments are over the size limit."""

    code = "job_args_too_large"


class JobStateConflict(Conflict):
    """The job is not in a state that allows this (e.g. retrying a job that is not dead)."""

    code = "job_state_conflict"


# --- scheduler (service 7) -------------------------------------------------


class ScheduleNotFound(NotFound):
    """No such schedule (or it belongs to someone else)."""

    code = "schedule_not_found"


class BadCron(InvalidInput):
    """The cron expression is not valid (five fields, or six with seconds first)."""

    code = "bad_cron"


class UnknownTimeZone(InvalidInput):
    """The time zone is not an IANA zone name (such as Europe/Paris)."""

    code = "unknown_time_zone"


class UnknownTarget(InvalidInput):
    """The schedule's target type is not one the scheduler knows."""

    code = "unknown_target"


# --- ledger (service 8) ----------------------------------------------------


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
