"""Errors of the queue service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, InvalidInput, NotFound, TooLarge


class QueueNotFound(NotFound):
    """No such queue for this caller: never created, deleted, or someone else's (queues are
    named per owner, so another user's queue of that name is not this caller's)."""

    code = "queue_not_found"


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
