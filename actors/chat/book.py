"""The durable half of a chat shard: its rooms as a fold of its journal.

``RoomBook`` is a ``Durable`` whose state is every room of the shard
(``actors.chat.room.Room``) and the direct rooms each user started. A change
is an ``apply_<op>`` method (deterministic: it goes through the room's rules,
which refuse before they change anything), journaled and replayed on
recovery. A change that others should see emits events; ``_write`` answers
once the record is durable and hands its events to ``published`` from the
commit's own callback, so in journal order and never before they are durable.

Limits that cap new things (members, pending entries, quotas) are checked when
a change is made, not when it is replayed, so lowering one never stops a
shard from starting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from actors.chat.errors import NotAllowed, RoomNotFound
from actors.chat.model import Event
from actors.chat.room import Limits, Room
from actors.chat.settings import ChatSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import Conflict, LimitReached
from actors.runtime.journal import Durable
from actors.runtime.store import Store


@dataclass(slots=True)
class ChatState:
    """What a snapshot holds: every room, and the direct rooms each user started."""

    rooms: dict[str, Room] = field(default_factory=dict)
    direct_claims: dict[str, list[str]] = field(default_factory=dict)


#: ``state_size`` counts again after this fraction of its last count in records.
SIZE_RECOUNT_FRACTION = 1 / 16


def _replay_limits(limits: Limits) -> Limits:
    """``limits`` with no cap on members and pending entries (history limits kept)."""
    return dataclasses.replace(limits, max_members=1 << 62, max_pending=1 << 62)


class RoomBook(Durable):
    """A shard's rooms: their durable state and its indexes."""

    def __init__(self, config: ChatSettings, *, clock: Clock | None = None) -> None:
        self.config = config
        self.limits = Limits.of(config)
        self.clock = clock or SystemClock()
        self.state = ChatState()
        # indexes, rebuilt from the rooms on recovery
        self.memberships: dict[str, set[str]] = {}  #: user -> rooms they are a member of
        self.invited: dict[str, set[str]] = {}  #: user -> rooms inviting them
        self.owned: dict[str, set[str]] = {}  #: user -> public and private rooms they own
        self.visible: dict[str, int] = {}  #: room -> last seq published (committed)
        self._emitted: list[tuple[str, Event]] = []  #: (room, event) of the apply under way
        self._replaying = False
        self._size = 0  #: the last count of ``state_size``
        self._size_asks = 0  #: times it was asked since
        self._size_recount_after = 1  #: asks before it is counted again

    @property
    def rooms(self) -> dict[str, Room]:
        return self.state.rooms

    async def open(self, store: Store, stream: str, **options: Any) -> None:
        self._replaying = True
        try:
            await super().open(store, stream, **options)
        finally:
            self._replaying = False
        self._emitted.clear()  # replayed: all of it is committed, and nobody follows yet
        self.visible = {room_id: room.last_seq for room_id, room in self.rooms.items()}

    def published(self, room: str, event: Event) -> None:
        """Called with each event once it is durable, in journal order."""

    # --- snapshots and indexes ------------------------------------------------------

    def snapshot_state(self) -> ChatState:
        return self.state

    def restore_state(self, state: ChatState) -> None:
        self.state = state
        self._size_recount_after = 1  # counted at the next ask
        self.memberships, self.invited, self.owned = {}, {}, {}
        for room in state.rooms.values():
            for user in room.members:
                self._touch(room, user)
            for user in room.invites:
                self._touch(room, user)

    def state_size(self) -> int:
        """Items a snapshot encodes (events, members, rooms), counted again only once
        per ``1 / SIZE_RECOUNT_FRACTION`` of the last count in records: the journal asks
        on every record, and a count walks every room, which would make each message
        cost O(rooms of the shard). The count is at least the number of rooms, so the
        recount costs O(1) per record, and the answer lags by a bounded fraction (a
        snapshot comes that much early or late; it only paces them)."""
        self._size_asks += 1
        if self._size_asks >= self._size_recount_after:
            self._size = sum(len(r.events) + len(r.members) + 1 for r in self.rooms.values())
            self._size_asks = 0
            self._size_recount_after = max(1, int(self._size * SIZE_RECOUNT_FRACTION))
        return self._size

    def _touch(self, room: Room, user: str) -> None:
        """Bring the indexes of ``user`` in ``room`` up to date."""
        exists = room.id in self.rooms
        for index, holds in (
            (self.memberships, exists and user in room.members),
            (self.invited, exists and user in room.invites),
            (self.owned, exists and room.owner == user and room.kind != "direct"),
        ):
            rooms = index.get(user)
            if holds:
                index.setdefault(user, set()).add(room.id)
            elif rooms is not None:
                rooms.discard(room.id)
                if not rooms:
                    del index[user]

    def _changed(
        self, room: Room, users: tuple[str, ...], events: list[Event | None], now: float
    ) -> int:
        """After a change: indexes for ``users``, history trimmed, events emitted; the last seq."""
        for user in users:
            self._touch(room, user)
        room.trim(now, self.limits)
        last = 0
        for event in events:
            if event is not None:
                self._emitted.append((room.id, event))
                last = event.seq
        return last

    @property
    def _limits(self) -> Limits:
        """The limits of new changes; a replay is not refused for limits lowered since."""
        return _replay_limits(self.limits) if self._replaying else self.limits

    # --- state changes (deterministic; replayed on recovery) ------------------------

    def apply_create_room(
        self,
        room: str,
        kind: str,
        name: str,
        topic: str,
        owner: str,
        owner_name: str,
        epoch: str,
        at: float,
    ) -> dict[str, Any]:
        if room in self.rooms:
            raise Conflict("a room with that id exists", room=room)
        if (
            not self._replaying
            and len(self.owned.get(owner, ())) >= self.config.max_rooms_per_owner
        ):
            raise LimitReached(
                "you own as many rooms as allowed: delete one first",
                limit=self.config.max_rooms_per_owner,
            )
        state = Room(room, kind, name, topic, owner, at, epoch)
        self.rooms[room] = state
        event = state._add_member(owner, owner_name, "owner", at, self._limits)
        seq = self._changed(state, (owner,), [event], at)
        return {"room": state.summary(owner), "seq": seq, "created": True}

    def apply_claim_direct(self, user: str, room: str) -> bool:
        claims = self.state.direct_claims.setdefault(user, [])
        if room in claims:
            return True
        if not self._replaying and len(claims) >= self.config.max_direct_rooms_per_user:
            if not claims:
                del self.state.direct_claims[user]
            raise LimitReached(
                "you started as many direct rooms as allowed: delete one first",
                limit=self.config.max_direct_rooms_per_user,
            )
        claims.append(room)
        return True

    def apply_release_direct(self, user: str, room: str) -> bool:
        claims = self.state.direct_claims.get(user, [])
        if room in claims:
            claims.remove(room)
            if not claims:
                del self.state.direct_claims[user]
        return True

    def apply_create_direct(
        self, room: str, user: str, username: str, peer: str, peer_name: str, epoch: str, at: float
    ) -> dict[str, Any]:
        existing = self.rooms.get(room)
        if existing is not None:
            return {"room": existing.summary(user), "seq": 0, "created": False}
        state = Room(room, "direct", "", "", user, at, epoch)
        self.rooms[room] = state
        events = [
            state._add_member(user, username, "member", at, self._limits),
            state._add_member(peer, peer_name, "member", at, self._limits),
        ]
        seq = self._changed(state, (user, peer), list(events), at)
        return {"room": state.summary(user), "seq": seq, "created": True}

    def apply_delete_room(self, room: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        state.require_member(user)
        if state.owner != user:
            raise NotAllowed("only the owner deletes the room", room=room)
        del self.rooms[room]
        for member in {*state.members, *state.invites, state.owner}:
            self._touch(state, member)
        return {"kind": state.kind, "owner": state.owner, "seq": 0}

    def apply_update_room(
        self,
        room: str,
        user: str,
        name: str | None,
        topic: str | None,
        slow_mode_s: float | None,
        at: float,
    ) -> dict[str, Any]:
        state = self._room(room)
        events = state.update(user, at, name=name, topic=topic, slow_mode_s=slow_mode_s)
        seq = self._changed(state, (), list(events), at)
        return {"room": state.summary(user), "seq": seq}

    def apply_archive(self, room: str, user: str, archived: bool, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.set_archived(user, archived, at)
        return {"room": state.summary(user), "seq": self._changed(state, (), [event], at)}

    def apply_join(self, room: str, user: str, username: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        status, event = state.join(user, username, at, self._limits)
        seq = self._changed(state, (user,), [event], at)
        return {"status": status, "room": state.summary(user), "seq": seq}

    def apply_leave(self, room: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.leave(user, at)
        return {"seq": self._changed(state, (user,), [event], at)}

    def apply_invite(
        self, room: str, by: str, user: str, username: str, at: float
    ) -> dict[str, Any]:
        state = self._room(room)
        event = state.invite(by, user, username, at, self._limits)
        status = "joined" if event is not None else "invited"
        return {"status": status, "seq": self._changed(state, (user,), [event], at)}

    def apply_uninvite(self, room: str, by: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        state.uninvite(by, user)
        return {"seq": self._changed(state, (user,), [], at)}

    def apply_approve(self, room: str, by: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.approve(by, user, at, self._limits)
        return {"status": "joined", "seq": self._changed(state, (user,), [event], at)}

    def apply_deny(self, room: str, by: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        state.deny(by, user)
        return {"seq": self._changed(state, (user,), [], at)}

    def apply_set_role(self, room: str, by: str, user: str, role: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.set_role(by, user, role, at)
        return {"seq": self._changed(state, (user,), [event], at)}

    def apply_kick(self, room: str, by: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.kick(by, user, at)
        return {"seq": self._changed(state, (user,), [event], at)}

    def apply_ban(
        self, room: str, by: str, user: str, until: float | None, reason: str, at: float
    ) -> dict[str, Any]:
        state = self._room(room)
        event = state.ban(by, user, until, reason, at, self._limits)
        return {"seq": self._changed(state, (user,), [event], at), "until": until}

    def apply_unban(self, room: str, by: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        state.unban(by, user)
        return {"seq": self._changed(state, (user,), [], at)}

    def apply_mute(
        self, room: str, by: str, user: str, until: float | None, at: float
    ) -> dict[str, Any]:
        state = self._room(room)
        event = state.mute(by, user, until, at)
        return {"seq": self._changed(state, (user,), [event], at), "until": until}

    def apply_unmute(self, room: str, by: str, user: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.unmute(by, user, at)
        return {"seq": self._changed(state, (user,), [event], at)}

    def apply_send(
        self,
        room: str,
        user: str,
        text: str,
        client_id: str,
        reply_to: int,
        mentions: tuple[str, ...],
        at: float,
    ) -> dict[str, Any]:
        state = self._room(room)
        event = state.send(user, text, client_id, reply_to, mentions, at)
        self._changed(state, (), [event], at)
        return {
            "seq": event.seq,
            "at": at,
            "client_id": client_id or None,
            "mentions": list(event.mentions),
        }

    def apply_edit(self, room: str, user: str, seq: int, text: str, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.edit(user, seq, text, at)
        return {"seq": self._changed(state, (), [event], at), "at": at}

    def apply_delete_message(self, room: str, user: str, seq: int, at: float) -> dict[str, Any]:
        state = self._room(room)
        event = state.delete(user, seq, at)
        return {"seq": self._changed(state, (), [event], at), "at": at}

    def apply_react(
        self, room: str, user: str, seq: int, emoji: str, on: bool, at: float
    ) -> dict[str, Any]:
        state = self._room(room)
        event = state.react(user, seq, emoji, on, at)
        return {"seq": self._changed(state, (), [event], at), "at": at}

    def apply_read(self, room: str, user: str, seq: int) -> int:
        return self._room(room).read(user, seq)

    # --- writing --------------------------------------------------------------------

    async def _write(self, op: str, *, key: str | None = None, **args: Any) -> tuple[Any, bool]:
        """Apply ``op``, answer once it is durable; its events go to ``published`` from
        the commit's callback, so in journal order. A repeated ``key`` answers the
        first result once that is durable, and applies nothing: ``(result, False)``."""
        if key is not None:
            first = await self.committed_reply(key)
            if first is not None:
                return first[1], False
        result, committed = self._begin(op, key=key, **args)
        await committed
        return result, True

    def _begin(
        self, op: str, *, key: str | None = None, **args: Any
    ) -> tuple[Any, asyncio.Future[int]]:
        """Apply ``op`` now: its result, and the commit to await before answering."""
        self._emitted.clear()
        result, committed = self.record(op, key=key, **args)
        events, self._emitted = self._emitted, []
        if events:
            committed.add_done_callback(partial(self._publish, events))
        return result, committed

    def _publish(self, events: list[tuple[str, Event]], done: asyncio.Future[int]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # the actor is crashing; nothing after this is answered
        for room, event in events:
            if room in self.rooms:
                self.visible[room] = event.seq
            self.published(room, event)

    def _room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise RoomNotFound(room=room_id)
        return room


__all__ = ["SIZE_RECOUNT_FRACTION", "ChatState", "RoomBook"]
