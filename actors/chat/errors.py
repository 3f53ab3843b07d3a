"""Errors of the chat service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, Forbidden, LimitReached, NotFound, RateLimited


class RoomNotFound(NotFound):
    """No such room for this caller: never created, deleted, or a private or direct room
    the caller is not in (which answers the same, so room ids do not leak)."""

    code = "room_not_found"


class MessageNotFound(NotFound):
    """No such message in this room's history (it may have been trimmed)."""

    code = "message_not_found"


class NotAMember(Forbidden):
    """The caller is not a member of this room: join it first."""

    code = "not_a_member"


class NotAllowed(Forbidden):
    """The caller's role in this room does not allow this."""

    code = "not_allowed"


class Banned(Forbidden):
    """The caller is banned from this room (until ``until``, or for good when null)."""

    code = "banned"


class Muted(Forbidden):
    """The caller is muted in this room until ``until``."""

    code = "muted"


class RoomFull(LimitReached):
    """The room has as many members (or pending invitations or requests) as allowed."""

    code = "room_full"


class RoomArchived(Conflict):
    """The room is archived: it can be read, not written to."""

    code = "room_archived"


class SlowMode(RateLimited):
    """The room is in slow mode: one message per ``slow_mode_s`` per member; retry after
    ``retry_after_s``."""

    code = "slow_mode"


__all__ = [
    "Banned",
    "MessageNotFound",
    "Muted",
    "NotAMember",
    "NotAllowed",
    "RoomArchived",
    "RoomFull",
    "RoomNotFound",
    "SlowMode",
]
