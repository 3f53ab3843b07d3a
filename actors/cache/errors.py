"""Errors of the cache service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, InvalidInput, NotFound, RealmError, TooLarge


class KeyTooLong(InvalidInput):
    """The key is longer than the limit."""

    code = "key_too_long"


class ValueTooLarge(TooLarge):
    """The value is larger than the limit."""

    code = "value_too_large"


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
