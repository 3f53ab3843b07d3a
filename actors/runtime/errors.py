"""The root of Realm's error tree, and the errors every service shares.

Actors raise these; Ray carries them to the caller intact (the fields survive
pickling), and one HTTP handler in ``apps.errors`` turns any of them into the
error envelope ``{"error": {"code", "message", "details", "request_id"}}``.
Every error has a stable ``code`` (for clients) and an HTTP ``status``; codes
are unique across Realm, so an error stored in a journal comes back as its
class (``RealmError.from_code``). A service's own errors live in its package
(``actors/<service>/errors.py``), each a subclass of one of these.

What a client sees of an error is ``to_dict()``: a client error (4xx) with its
message and details, which speak of the request; a server fault (5xx) with its
code and its class's message only (``summary()``). A fault's own message and
details may name internals (a store's address, a file, another error's text):
they are for the log, never for an answer.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar


def _rebuild(cls: type[RealmError], message: str, details: dict[str, Any]) -> RealmError:
    error = cls.__new__(cls)
    RealmError.__init__(error, message, **details)
    return error


class RealmError(Exception):
    """Root of every error Realm raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    #: Every error class by its code (filled as the classes are defined).
    by_code: ClassVar[dict[str, type[RealmError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            RealmError.by_code.setdefault(cls.code, cls)

    @classmethod
    def from_code(cls, code: str, message: str, details: dict[str, Any]) -> RealmError:
        """The error with ``code`` (a plain ``RealmError`` if no class has it)."""
        return _rebuild(RealmError.by_code.get(code, RealmError), message, details)

    @classmethod
    def summary(cls) -> str:
        """The class's own message: the first paragraph of its docstring (or of the
        nearest base's below ``RealmError``) on one line; "internal error" for the root."""
        for klass in cls.__mro__:
            if klass is RealmError:
                break
            doc = klass.__dict__.get("__doc__")
            if doc:
                return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
        return "internal error"

    @property
    def is_fault(self) -> bool:
        """A server-side fault (5xx): its message and details stay out of answers."""
        return self.status >= 500

    def __init__(self, message: str | None = None, /, **details: Any) -> None:
        self.message = message or self.summary()
        self.details = details
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.details.items())
        return f"{type(self).__name__}({self.message!r}{', ' if fields else ''}{fields})"

    def to_dict(self) -> dict[str, Any]:
        """The error as a client may see it (an HTTP answer, a WebSocket frame, a
        result kept for a user): a fault (5xx) shows its code and ``summary()``
        only, with no details."""
        if self.is_fault:
            return {"code": self.code, "message": self.summary(), "details": {}}
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


class BatchTooLarge(TooLarge):
    """The batch has more items than the limit."""

    code = "batch_too_large"


class Unauthorized(RealmError):
    """Missing, malformed, unknown, expired or revoked credentials."""

    code = "unauthorized"
    status = 401


class Forbidden(RealmError):
    """The caller may not do this."""

    code = "forbidden"
    status = 403


class LimitReached(Forbidden):
    """The owner already holds as many objects of this kind as allowed (a queue,
    a pool, a room...): delete one first, or ask for a higher limit."""

    code = "limit_reached"


class RateLimited(RealmError):
    """Too many requests from this caller; retry after ``retry_after_s``."""

    code = "rate_limited"
    status = 429


class QueueFull(RealmError):
    """A bounded queue (of waiters, of messages) is full; retry later."""

    code = "queue_full"
    status = 429


# --- server-side faults (5xx) ---------------------------------------------


class Unavailable(RealmError):
    """A dependency is not answering; the request may be retried."""

    code = "unavailable"
    status = 503


class StoreUnavailable(Unavailable):
    """The durable store is not answering; nothing was acknowledged, so the request
    may be retried."""

    code = "store_unavailable"


class JournalConflict(Unavailable):
    """Another writer appended to this journal: this actor incarnation is stale."""

    code = "journal_conflict"


class RecordUndecodable(RealmError):
    """A journal record or snapshot in the store does not decode; the actor cannot start."""

    code = "record_undecodable"
