"""One room's state and rules, as a plain class: members and roles, invitations
and join requests, bans and mutes, and its numbered history.

Every change is a method that takes the time of its journal record (``now``),
checks everything before it changes anything, and raises a ``RealmError`` to
refuse, so replaying the journal makes the same room. A change that others
should see appends an ``Event`` (``_append``) with the room's next seq.

Visibility: a public room is visible to everyone; a private or direct room
only to its members and to those it invites. Anything about a room one cannot
see answers ``RoomNotFound``, as if it did not exist.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from actors.chat.errors import (
    Banned,
    MessageNotFound,
    Muted,
    NotAllowed,
    NotAMember,
    RoomArchived,
    RoomFull,
    RoomNotFound,
    SlowMode,
)
from actors.chat.model import (
    MAX_MENTIONS,
    MAX_REACTIONS,
    RANK,
    Ban,
    Event,
    Member,
    Message,
    Pending,
)
from actors.chat.settings import ChatSettings
from actors.runtime.errors import Conflict, InvalidInput


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings a room's rules read."""

    max_members: int
    max_pending: int
    max_message_bytes: int
    history_max: int
    history_max_bytes: int
    history_max_age_s: float

    @classmethod
    def of(cls, config: ChatSettings) -> Limits:
        return cls(
            max_members=config.max_members_per_room,
            max_pending=config.max_pending_per_room,
            max_message_bytes=config.max_message_bytes,
            history_max=config.history_max,
            history_max_bytes=config.history_max_bytes,
            history_max_age_s=config.history_max_age_s,
        )


@dataclass(slots=True)
class Room:
    id: str
    kind: str  #: public | private | direct
    name: str
    topic: str
    owner: str  #: who created it (a direct room's starter)
    created_at: float
    #: Names this incarnation of the room's history: a client resuming with
    #: another epoch (the room was deleted and made again) cannot recover.
    epoch: str
    archived: bool = False
    slow_mode_s: float = 0.0
    last_seq: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    invites: dict[str, Pending] = field(default_factory=dict)
    requests: dict[str, Pending] = field(default_factory=dict)
    bans: dict[str, Ban] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=deque)  #: contiguous seqs, oldest first
    messages: dict[int, Message] = field(default_factory=dict)  #: kept messages, by seq
    history_bytes: int = 0

    # --- who may do what ------------------------------------------------------------

    def visible_to(self, user: str) -> bool:
        return self.kind == "public" or user in self.members or user in self.invites

    def require_visible(self, user: str) -> None:
        if not self.visible_to(user):
            raise RoomNotFound(room=self.id)

    def require_member(self, user: str) -> Member:
        self.require_visible(user)
        member = self.members.get(user)
        if member is None:
            raise NotAMember(room=self.id)
        return member

    def require_rank(self, user: str, role: str) -> Member:
        member = self.require_member(user)
        if RANK[member.role] < RANK[role]:
            raise NotAllowed(f"this needs the {role} role in the room", room=self.id)
        return member

    def require_writable(self) -> None:
        if self.archived:
            raise RoomArchived(room=self.id)

    def require_not_direct(self, user: str) -> None:
        self.require_visible(user)
        if self.kind == "direct":
            raise NotAllowed("a direct room's members and roles are fixed", room=self.id)

    def active_ban(self, user: str, now: float) -> Ban | None:
        ban = self.bans.get(user)
        if ban is None or (ban.until is not None and ban.until <= now):
            return None
        return ban

    def _moderate(self, by: str, target: str) -> Member | None:
        """The target's membership (None if not a member), once ``by`` may act on them."""
        self.require_not_direct(by)
        actor = self.require_rank(by, "moderator")
        member = self.members.get(target)
        if target == by:
            raise InvalidInput("one cannot moderate oneself", room=self.id)
        if member is not None and RANK[member.role] >= RANK[actor.role]:
            raise NotAllowed("one moderates only members of a lower role", room=self.id)
        return member

    # --- history --------------------------------------------------------------------

    def first_kept(self) -> int:
        return self.events[0].seq if self.events else self.last_seq + 1

    def _append(self, now: float, kind: str, user: str, username: str, **fields: Any) -> Event:
        self.last_seq += 1
        event = Event(self.last_seq, now, kind, user, username, **fields)
        self.events.append(event)
        self.history_bytes += event.size()
        return event

    def trim(self, now: float, limits: Limits) -> None:
        cutoff = now - limits.history_max_age_s
        events = self.events
        while events and (
            len(events) > limits.history_max
            or self.history_bytes > limits.history_max_bytes
            or events[0].at < cutoff
        ):
            gone = events.popleft()
            self.history_bytes -= gone.size()
            if gone.kind == "message":
                self.messages.pop(gone.seq, None)

    def event_at(self, seq: int) -> Event | None:
        first = self.first_kept()
        if not first <= seq <= self.last_seq or not self.events:
            return None
        return self.events[seq - first]

    def events_after(self, after: int, upto: int, limit: int) -> list[Event]:
        """Kept events with ``after < seq <= upto``, oldest first, at most ``limit``."""
        first = self.first_kept()
        start = max(0, after + 1 - first)
        stop = max(start, min(len(self.events), upto + 1 - first))
        return list(itertools.islice(self.events, start, min(stop, start + limit)))

    def message(self, seq: int) -> Message:
        message = self.messages.get(seq)
        if message is None:
            raise MessageNotFound(room=self.id, seq=seq)
        return message

    def messages_page(self, *, after: int | None, before: int | None, limit: int) -> list[Message]:
        """Kept messages (tombstones included) after ``after`` (oldest first) or, if
        not given, the latest before ``before`` (None: the end)."""
        kept = list(self.messages.values())  # in seq order
        if after is not None:
            return [m for m in kept if m.seq > after][:limit]
        upto = [m for m in kept if before is None or m.seq < before]
        return upto[-limit:]

    def search(
        self, words: list[str], sender: str | None, before: int | None, limit: int
    ) -> list[Message]:
        """Newest first: kept, undeleted messages holding every word (case-folded) and
        from ``sender`` if given."""
        found = []
        for message in reversed(self.messages.values()):
            if before is not None and message.seq >= before:
                continue
            if message.deleted or (sender is not None and message.user != sender):
                continue
            text = message.text.casefold()
            if all(word in text for word in words):
                found.append(message)
                if len(found) >= limit:
                    break
        return found

    def unread(self, user: str) -> int:
        """Messages from others, not deleted, after the member's last read seq."""
        member = self.members.get(user)
        if member is None:
            return 0
        count = 0
        for event in self.events_after(member.last_read, self.last_seq, len(self.events)):
            if event.kind == "message" and event.user != user:
                message = self.messages.get(event.seq)
                if message is not None and not message.deleted:
                    count += 1
        return count

    def _blank(self, seq: int) -> None:
        """Take a deleted message's text out of the kept events (the message and its edits)."""
        first = self.first_kept()
        for index in range(max(0, seq - first), len(self.events)):
            event = self.events[index]
            if (event.seq == seq and event.kind == "message") or (
                event.kind == "edit" and event.target == seq
            ):
                blank = msgspec.structs.replace(event, text="")
                self.history_bytes += blank.size() - event.size()
                self.events[index] = blank

    # --- membership -----------------------------------------------------------------

    def _add_member(self, user: str, username: str, role: str, now: float, limits: Limits) -> Event:
        if len(self.members) >= limits.max_members:
            raise RoomFull(
                "the room has as many members as allowed", room=self.id, limit=limits.max_members
            )
        member = self.members[user] = Member(username, role, now)
        self.invites.pop(user, None)
        self.requests.pop(user, None)
        event = self._append(
            now, "member", user, username, action="joined", subject=user, value=username
        )
        member.last_read = event.seq
        return event

    def _remove_member(self, user: str, by: str, by_name: str, action: str, now: float) -> Event:
        member = self.members.pop(user)
        return self._append(
            now, "member", by, by_name, action=action, subject=user, value=member.username
        )

    def join(
        self, user: str, username: str, now: float, limits: Limits
    ) -> tuple[str, Event | None]:
        """``joined`` (with its event), ``member`` (already one) or ``requested``."""
        if self.kind == "direct":
            self.require_member(user)
            return "member", None
        ban = self.active_ban(user, now)
        if ban is not None:
            if self.kind != "public" and user not in self.invites:
                raise RoomNotFound(room=self.id)
            raise Banned(room=self.id, until=ban.until)
        if user in self.members:
            return "member", None
        self.require_writable()
        if self.kind == "public" or user in self.invites:
            return "joined", self._add_member(user, username, "member", now, limits)
        if user not in self.requests:
            if len(self.requests) >= limits.max_pending:
                raise RoomFull("the room has as many join requests as allowed", room=self.id)
            self.requests[user] = Pending(username, now)
        return "requested", None

    def leave(self, user: str, now: float) -> Event:
        member = self.require_member(user)
        self.require_not_direct(user)
        if member.role == "owner":
            raise NotAllowed("the owner cannot leave the room; delete it instead", room=self.id)
        return self._remove_member(user, user, member.username, "left", now)

    def invite(self, by: str, user: str, username: str, now: float, limits: Limits) -> Event | None:
        """Invite ``user``; one who asked to join is let in at once (their event)."""
        self.require_not_direct(by)
        self.require_rank(by, "moderator")
        self.require_writable()
        if user in self.members:
            raise Conflict("already a member", room=self.id, user_id=user)
        if self.active_ban(user, now) is not None:
            raise Conflict("the user is banned from the room: unban first", room=self.id)
        if user in self.requests:
            return self._add_member(user, username, "member", now, limits)
        if user not in self.invites:
            if len(self.invites) >= limits.max_pending:
                raise RoomFull("the room has as many invitations as allowed", room=self.id)
            self.invites[user] = Pending(username, now, by=by)
        return None

    def uninvite(self, by: str, user: str) -> None:
        """An invitation revoked by a moderator, or declined by its invitee."""
        if by != user:
            self.require_rank(by, "moderator")
        elif user not in self.invites:
            raise RoomNotFound(room=self.id)
        self.invites.pop(user, None)

    def approve(self, by: str, user: str, now: float, limits: Limits) -> Event:
        self.require_not_direct(by)
        self.require_rank(by, "moderator")
        self.require_writable()
        request = self.requests.get(user)
        if request is None:
            raise Conflict("no join request from that user", room=self.id, user_id=user)
        return self._add_member(user, request.username, "member", now, limits)

    def deny(self, by: str, user: str) -> None:
        """A join request refused by a moderator, or withdrawn by its requester."""
        if by == user:
            if user not in self.requests:
                raise RoomNotFound(room=self.id)
        else:
            self.require_rank(by, "moderator")
        self.requests.pop(user, None)

    def set_role(self, by: str, user: str, role: str, now: float) -> Event | None:
        self.require_not_direct(by)
        actor = self.require_rank(by, "owner")
        if role not in ("moderator", "member"):
            raise InvalidInput("a role given is moderator or member", role=role)
        if user == by:
            raise InvalidInput("the owner's role does not change", room=self.id)
        member = self.members.get(user)
        if member is None:
            raise Conflict("not a member of the room", room=self.id, user_id=user)
        if member.role == role:
            return None
        member.role = role
        return self._append(
            now, "member", by, actor.username, action="role", subject=user, value=role
        )

    def kick(self, by: str, user: str, now: float) -> Event:
        target = self._moderate(by, user)
        if target is None:
            raise Conflict("not a member of the room", room=self.id, user_id=user)
        return self._remove_member(user, by, self.members[by].username, "kicked", now)

    def ban(
        self, by: str, user: str, until: float | None, reason: str, now: float, limits: Limits
    ) -> Event | None:
        target = self._moderate(by, user)
        if user not in self.bans and len(self.bans) >= limits.max_pending:
            self._forget_expired_bans(now)
            if len(self.bans) >= limits.max_pending:
                raise RoomFull("the room has as many bans as allowed", room=self.id)
        self.bans[user] = Ban(until, by, now, reason)
        self.invites.pop(user, None)
        self.requests.pop(user, None)
        if target is None:
            return None
        return self._remove_member(user, by, self.members[by].username, "banned", now)

    def _forget_expired_bans(self, now: float) -> None:
        for user in [
            u for u, ban in self.bans.items() if ban.until is not None and ban.until <= now
        ]:
            del self.bans[user]

    def unban(self, by: str, user: str) -> None:
        self.require_not_direct(by)
        self.require_rank(by, "moderator")
        self.bans.pop(user, None)

    def mute(self, by: str, user: str, until: float | None, now: float) -> Event:
        target = self._moderate(by, user)
        if target is None:
            raise Conflict("not a member of the room", room=self.id, user_id=user)
        target.muted, target.muted_until = True, until
        return self._append(
            now,
            "member",
            by,
            self.members[by].username,
            action="muted",
            subject=user,
            value=target.username,
        )

    def unmute(self, by: str, user: str, now: float) -> Event | None:
        target = self._moderate(by, user)
        if target is None or not target.muted:
            return None
        target.muted, target.muted_until = False, None
        return self._append(
            now,
            "member",
            by,
            self.members[by].username,
            action="unmuted",
            subject=user,
            value=target.username,
        )

    # --- the room itself ------------------------------------------------------------

    def update(
        self, by: str, now: float, *, name: str | None, topic: str | None, slow_mode_s: float | None
    ) -> list[Event]:
        self.require_not_direct(by)
        actor = self.require_rank(by, "moderator")
        self.require_writable()
        if name is not None and actor.role != "owner":
            raise NotAllowed("only the owner renames the room", room=self.id)
        events = []
        for action, value, current in (
            ("renamed", name, self.name),
            ("topic", topic, self.topic),
            (
                "slow_mode",
                None if slow_mode_s is None else f"{slow_mode_s:g}",
                f"{self.slow_mode_s:g}",
            ),
        ):
            if value is None or value == current:
                continue
            if action == "renamed":
                self.name = value
            elif action == "topic":
                self.topic = value
            else:
                self.slow_mode_s = float(value)
            events.append(self._append(now, "room", by, actor.username, action=action, value=value))
        return events

    def set_archived(self, by: str, archived: bool, now: float) -> Event | None:
        self.require_member(by)
        if by != self.owner:
            raise NotAllowed("only the owner archives the room", room=self.id)
        if self.archived == archived:
            return None
        self.archived = archived
        action = "archived" if archived else "unarchived"
        return self._append(now, "room", by, self.members[by].username, action=action)

    # --- messages -------------------------------------------------------------------

    def send(
        self,
        user: str,
        text: str,
        client_id: str,
        reply_to: int,
        mentions: tuple[str, ...],
        now: float,
    ) -> Event:
        member = self.require_member(user)
        self.require_writable()
        if member.muted and (member.muted_until is None or member.muted_until > now):
            raise Muted(room=self.id, until=member.muted_until)
        if self.slow_mode_s and RANK[member.role] < RANK["moderator"] and member.last_sent_at:
            wait = member.last_sent_at + self.slow_mode_s - now
            if wait > 0:
                raise SlowMode(
                    room=self.id, slow_mode_s=self.slow_mode_s, retry_after_s=round(wait, 3)
                )
        if reply_to:
            if reply_to > self.last_seq:
                raise MessageNotFound("no such message to reply to", room=self.id, seq=reply_to)
            parent = self.event_at(reply_to)
            if parent is not None and parent.kind != "message":
                raise InvalidInput("a reply answers a message", room=self.id, reply_to=reply_to)
        mentioned = tuple(u for u in dict.fromkeys(mentions) if u in self.members and u != user)[
            :MAX_MENTIONS
        ]
        event = self._append(
            now,
            "message",
            user,
            member.username,
            text=text,
            reply_to=reply_to,
            mentions=mentioned,
            client_id=client_id,
        )
        self.messages[event.seq] = Message(
            event.seq, now, user, member.username, text, reply_to, mentioned, client_id
        )
        member.last_sent_at = now
        return event

    def edit(self, user: str, seq: int, text: str, now: float) -> Event:
        member = self.require_member(user)
        self.require_writable()
        message = self.message(seq)
        if message.user != user:
            raise NotAllowed("one edits only one's own messages", room=self.id, seq=seq)
        if message.deleted:
            raise Conflict("the message is deleted", room=self.id, seq=seq)
        message.text, message.edited_at = text, now
        return self._append(now, "edit", user, member.username, text=text, target=seq)

    def delete(self, user: str, seq: int, now: float) -> Event | None:
        """Delete a message (one's own, or as a moderator one of a lower role's); None if
        it was deleted already."""
        member = self.require_member(user)
        self.require_writable()
        message = self.message(seq)
        if message.user != user:
            sender = self.members.get(message.user)
            sender_rank = RANK[sender.role] if sender is not None else 0
            if RANK[member.role] < RANK["moderator"] or sender_rank >= RANK[member.role]:
                raise NotAllowed(
                    "one deletes one's own messages, or as a moderator those "
                    "of members of a lower role",
                    room=self.id,
                    seq=seq,
                )
        if message.deleted:
            return None
        message.deleted, message.deleted_by, message.text = True, user, ""
        message.reactions.clear()
        self._blank(seq)
        return self._append(now, "delete", user, member.username, target=seq)

    def react(self, user: str, seq: int, emoji: str, on: bool, now: float) -> Event | None:
        """Add (or take back) a reaction; None if that changes nothing."""
        member = self.require_member(user)
        self.require_writable()
        message = self.message(seq)
        if message.deleted:
            raise Conflict("the message is deleted", room=self.id, seq=seq)
        users = message.reactions.get(emoji)
        if on:
            if users is not None and user in users:
                return None
            if users is None:
                if len(message.reactions) >= MAX_REACTIONS:
                    raise Conflict(
                        "the message has as many different reactions as allowed",
                        room=self.id,
                        limit=MAX_REACTIONS,
                    )
                users = message.reactions[emoji] = []
            users.append(user)
        else:
            if users is None or user not in users:
                return None
            users.remove(user)
            if not users:
                del message.reactions[emoji]
        return self._append(now, "reaction", user, member.username, target=seq, emoji=emoji, on=on)

    def read(self, user: str, seq: int) -> int:
        """Move the member's read marker forward to ``seq``; the marker."""
        member = self.require_member(user)
        member.last_read = max(member.last_read, min(seq, self.last_seq))
        return member.last_read

    # --- views ----------------------------------------------------------------------

    def summary(self, user: str | None = None) -> dict[str, Any]:
        member = self.members.get(user) if user is not None else None
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "topic": self.topic,
            "owner_id": self.owner,
            "created_at": self.created_at,
            "archived": self.archived,
            "slow_mode_s": self.slow_mode_s,
            "members": len(self.members),
            "last_seq": self.last_seq,
            "epoch": self.epoch,
        }
        if member is not None:
            body |= {
                "role": member.role,
                "last_read": member.last_read,
                "unread": self.unread(user or ""),
            }
        elif user is not None:
            body |= {"role": None, "invited": user in self.invites}
        return body

    def member_list(self, after: str, limit: int) -> Iterator[dict[str, Any]]:
        for user in sorted(u for u in self.members if u > after)[:limit]:
            member = self.members[user]
            yield {
                "user_id": user,
                "username": member.username,
                "role": member.role,
                "joined_at": member.joined_at,
                "muted": member.muted,
                "muted_until": member.muted_until,
            }


__all__ = ["Limits", "Room"]
