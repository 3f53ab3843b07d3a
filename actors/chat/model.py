"""Chat's domain types and input rules.

A room's history is a stream of numbered **events**: a ``message``, an ``edit``
or a ``delete`` of one, a ``reaction`` to one, a ``member`` change (joined,
left, kicked, banned, role) or a ``room`` change (renamed, topic, slow mode,
archived). Every event takes the room's next sequence number, so a client
that resumes from a seq sees edits, deletions and reactions it missed, in
order. The current state of each kept message (text, edited, deleted,
reactions) is kept beside the events for history pages and search; a deleted
message stays in place as a tombstone (its text gone), so the order holds.

Events and members are plain data (``msgspec.Struct``, dataclasses), as the
journal stores them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from actors.chat.errors import RoomNotFound
from actors.chat.settings import EVENT_OVERHEAD_BYTES
from actors.runtime.errors import InvalidInput, TooLarge

RoomKind = Literal["public", "private", "direct"]
Role = Literal["owner", "moderator", "member"]
KINDS: tuple[str, ...] = ("public", "private", "direct")
ROLES: tuple[str, ...] = ("owner", "moderator", "member")
#: A role's rank: one may moderate only those of a lower rank.
RANK = {"owner": 3, "moderator": 2, "member": 1}

#: Longest room name, topic (characters).
MAX_NAME_CHARS = 100
MAX_TOPIC_CHARS = 500
#: Longest client message id, emoji (characters).
MAX_CLIENT_ID_CHARS = 64
MAX_EMOJI_CHARS = 32
#: Most users one message may mention (explicitly and by @username together).
MAX_MENTIONS = 20
#: Most distinct reactions (emoji) on one message.
MAX_REACTIONS = 20
#: Longest ban or mute (a year and a day); longer means "until lifted" (no duration).
MAX_DURATION_S = 366 * 86_400.0
#: Longest slow-mode interval.
MAX_SLOW_MODE_S = 3_600.0
#: Longest search text.
MAX_QUERY_CHARS = 200
#: Most items in one page of history, search, members or rooms.
MAX_PAGE = 500
#: A user id as the auth service makes them (and tests), and a room id as chat makes them.
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ROOM_ID = re.compile(r"^[rd]-[0-9a-f]{20,32}$")
#: @username in a message's text (usernames: letters, digits and . _ - @ +).
MENTION = re.compile(r"(?<![\w.@+-])@([\w.+-]{1,64})")


class Event(msgspec.Struct, frozen=True):
    """One numbered entry of a room's history (see the module docstring)."""

    seq: int
    at: float
    kind: str  #: message | edit | delete | reaction | member | room
    user: str  #: who did it
    username: str
    text: str = ""  #: message: its text; edit: the new text
    target: int = 0  #: edit, delete, reaction: the message's seq
    reply_to: int = 0  #: message: the seq of the message it answers (0: none)
    mentions: tuple[str, ...] = ()  #: message: user ids mentioned
    client_id: str = ""  #: message: the sender's id for it
    emoji: str = ""  #: reaction
    on: bool = True  #: reaction: added (or removed)
    action: str = ""  #: member: joined | left | kicked | banned | role; room: what changed
    subject: str = ""  #: member: whom it is about
    value: str = ""  #: member: the subject's name, or new role; room: the new value

    def size(self) -> int:
        return len(self.text.encode()) + len(self.value.encode()) + EVENT_OVERHEAD_BYTES


@dataclass(slots=True)
class Message:
    """A kept message's current state."""

    seq: int
    at: float
    user: str
    username: str
    text: str
    reply_to: int = 0
    mentions: tuple[str, ...] = ()
    client_id: str = ""
    edited_at: float | None = None
    deleted: bool = False
    deleted_by: str = ""
    #: emoji -> ids of the users who reacted with it, in order
    reactions: dict[str, list[str]] = field(default_factory=dict)

    def public(self, viewer: str | None = None) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "user_id": self.user,
            "username": self.username,
            "text": self.text,
            "reply_to": self.reply_to or None,
            "mentions": list(self.mentions),
            "client_id": self.client_id or None,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
            "reactions": [
                {"emoji": emoji, "count": len(users), "me": viewer in users}
                for emoji, users in self.reactions.items()
            ],
        }


@dataclass(slots=True)
class Member:
    username: str
    role: str
    joined_at: float
    last_read: int = 0  #: last seq the member has read
    last_sent_at: float = 0.0  #: when the member last sent a message (slow mode)
    muted_until: float | None = None  #: while muted: until when (None: until unmuted)
    muted: bool = False


@dataclass(slots=True)
class Pending:
    """An invitation (by whom) or a join request."""

    username: str
    at: float
    by: str = ""


@dataclass(slots=True)
class Ban:
    until: float | None  #: None: until lifted
    by: str
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Device:
    """One connection's presence in a room, as a replica reports it."""

    room: str
    user: str
    username: str
    device: str


#: What a shard posts to a replica following a room. ``kind`` is ``event`` (a
#: numbered ``Event``), ``presence`` (a diff: ``users`` joined, ``leaves`` left),
#: ``presence_state`` (the whole list, ``users``), ``typing`` and ``receipt``
#: (``user``, ``username``, ``seq``), or ``gone`` (the room was deleted).
class Post(msgspec.Struct, frozen=True):
    kind: str
    room: str
    event: Event | None = None
    version: int = 0
    users: tuple[tuple[str, str], ...] = ()
    leaves: tuple[str, ...] = ()
    user: str = ""
    username: str = ""
    seq: int = 0

    def size(self) -> int:
        if self.event is not None:
            return self.event.size()
        return EVENT_OVERHEAD_BYTES + 80 * (len(self.users) + len(self.leaves))


# --- input rules ----------------------------------------------------------------------


def _printable(value: str) -> bool:
    return all(c.isprintable() for c in value)


def check_room_id(room: object) -> str:
    """A room id as chat makes them; anything else names no room (404)."""
    if not isinstance(room, str) or not ROOM_ID.match(room):
        raise RoomNotFound(room=str(room)[:80])
    return room


def check_user_id(user: object, what: str = "user_id") -> str:
    if not isinstance(user, str) or not USER_ID.match(user):
        raise InvalidInput(f"{what} is 1 to 64 letters, digits, - or _", **{what: str(user)[:80]})
    return user


def check_kind(kind: object) -> str:
    if kind not in ("public", "private"):
        raise InvalidInput("a room is public or private (direct rooms have their own route)")
    return str(kind)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"a room name is 1 to {MAX_NAME_CHARS} characters")
    if not _printable(name):
        raise InvalidInput("a room name is one line of printable characters")
    return name.strip()


def check_topic(topic: object) -> str:
    if not isinstance(topic, str) or len(topic) > MAX_TOPIC_CHARS:
        raise InvalidInput(f"a topic is at most {MAX_TOPIC_CHARS} characters")
    if not _printable(topic):
        raise InvalidInput("a topic is one line of printable characters")
    return topic.strip()


def check_text(text: object, max_bytes: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("a message has some text")
    size = len(text.encode())
    if size > max_bytes:
        raise TooLarge("the message text is over the size limit", size=size, limit=max_bytes)
    return text


def check_client_id(client_id: object) -> str:
    if client_id == "":
        return ""
    if (
        not isinstance(client_id, str)
        or len(client_id) > MAX_CLIENT_ID_CHARS
        or any(c.isspace() or not c.isprintable() for c in client_id)
    ):
        raise InvalidInput(
            f"a client message id is 1 to {MAX_CLIENT_ID_CHARS} characters, no spaces"
        )
    return client_id


def check_emoji(emoji: object) -> str:
    if (
        not isinstance(emoji, str)
        or not emoji
        or len(emoji) > MAX_EMOJI_CHARS
        or any(c.isspace() or not c.isprintable() for c in emoji)
    ):
        raise InvalidInput(f"a reaction is 1 to {MAX_EMOJI_CHARS} characters, no spaces")
    return emoji


def check_seq(seq: object, what: str = "seq") -> int:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInput(f"{what} is an integer >= 0", **{what: str(seq)[:40]})
    return seq


def check_duration(duration_s: object, what: str = "duration_s") -> float | None:
    """None (until lifted), or seconds in (0, MAX_DURATION_S]."""
    if duration_s is None:
        return None
    if (
        not isinstance(duration_s, int | float)
        or isinstance(duration_s, bool)
        or not 0 < duration_s <= MAX_DURATION_S
    ):
        raise InvalidInput(f"{what} is a number of seconds in (0, {MAX_DURATION_S:g}]")
    return float(duration_s)


def check_slow_mode(seconds: object) -> float:
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 0 <= seconds <= MAX_SLOW_MODE_S
    ):
        raise InvalidInput(f"slow_mode_s is a number of seconds in [0, {MAX_SLOW_MODE_S:g}]")
    return float(seconds)


def check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit is an integer in [1, {MAX_PAGE}]")
    return limit


def mentioned_names(text: str) -> list[str]:
    """The @usernames in ``text``, case-folded, in order, once each."""
    return list(dict.fromkeys(name.casefold() for name in MENTION.findall(text)))


def direct_room_id(a: str, b: str) -> str:
    """The one direct room of users ``a`` and ``b`` (either order)."""
    low, high = sorted((a, b))
    return "d-" + hashlib.sha256(f"{low}\x00{high}".encode()).hexdigest()[:24]


__all__ = [
    "KINDS",
    "MAX_DURATION_S",
    "MAX_MENTIONS",
    "MAX_NAME_CHARS",
    "MAX_PAGE",
    "MAX_QUERY_CHARS",
    "MAX_REACTIONS",
    "MAX_SLOW_MODE_S",
    "MAX_TOPIC_CHARS",
    "RANK",
    "ROLES",
    "Ban",
    "Device",
    "Event",
    "Member",
    "Message",
    "Pending",
    "Post",
    "Role",
    "RoomKind",
    "check_client_id",
    "check_duration",
    "check_emoji",
    "check_kind",
    "check_limit",
    "check_name",
    "check_room_id",
    "check_seq",
    "check_slow_mode",
    "check_text",
    "check_topic",
    "check_user_id",
    "direct_room_id",
    "mentioned_names",
]
