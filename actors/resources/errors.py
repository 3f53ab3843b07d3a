"""Errors of the resources service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, Forbidden, NotFound, RateLimited, RealmError


class PoolNotFound(NotFound):
    """No such resource pool."""

    code = "pool_not_found"


class GroupNotFound(NotFound):
    """No such group of pools."""

    code = "group_not_found"


class PoolExists(Conflict):
    """A pool (or group) of that name exists with a different definition."""

    code = "pool_exists"


class PoolBusy(Conflict):
    """The pool has leases held or acquires waiting; release or withdraw them first."""

    code = "pool_busy"


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


class TooManyAcquires(RateLimited):
    """This WebSocket has as many acquires in progress as it may; wait for one to end."""

    code = "too_many_acquires"
