"""Chat (service 3): a shard of rooms, as a plain class, and its actor.

A ``ChatShard`` holds many rooms; the client places a room on a shard by
rendezvous hashing of its id. Its durable half, ``actors.chat.book.RoomBook``,
journals everything about a room that must last (members, roles, invitations,
bans, mutes, messages and their history). What is ephemeral is not
journaled: presence (``actors.chat.presence``), typing indicators, the
per-user write allowance (``actors.chat.ratelimit``) and the followers
(``actors.chat.followers``).

Delivery to live clients goes through followers, one per Serve replica, as in
pub/sub: a replica follows the rooms its connections have joined
(``open_room``, ``unwatch``, or ``rejoin`` after the shard forgot it), and
each event is posted once to the mailbox of every follower of its room, which
the replica long-polls (``pull``). An event is posted only once its journal
record is committed, in journal order, so no client sees a seq that a crash
could hand out again; history and resumes never return an event beyond what
was posted (``visible``). Presence diffs, typing and read receipts are posted
at once.

Quotas: a user's public and private rooms are placed on the shard their user
id hashes to (the client picks room ids that land there), so the count of
rooms a user owns is exact and local. Direct rooms are placed by the pair's
id; the direct rooms a user started are counted as claims on their own shard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import Any

import ray

from actors.chat.book import RoomBook
from actors.chat.errors import NotAMember, RoomNotFound
from actors.chat.followers import Followers
from actors.chat.model import (
    MAX_QUERY_CHARS,
    Device,
    Event,
    Post,
    check_client_id,
    check_emoji,
    check_limit,
    check_name,
    check_seq,
    check_text,
    check_topic,
    mentioned_names,
)
from actors.chat.notify import Mention, MentionNotifier, NoMentions, PushMentions
from actors.chat.presence import Presence
from actors.chat.ratelimit import UserRates
from actors.chat.room import Room
from actors.chat.settings import ChatSettings
from actors.runtime.clock import Clock, every
from actors.runtime.errors import InvalidInput, LimitReached, RealmError
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

log = logging.getLogger(__name__)

#: Prefix of the shard actors' names: ``chat-shard-<i>`` (``actors.runtime.shards``).
SHARD_PREFIX = "chat-shard"
#: Most events one history or resume answer carries.
EVENTS_PAGE = 500


class ChatShard(RoomBook):
    """Many rooms: their durable state (``RoomBook``), presence, and fan-out."""

    def __init__(
        self,
        config: ChatSettings,
        *,
        clock: Clock | None = None,
        notifier: MentionNotifier | None = None,
    ) -> None:
        super().__init__(config, clock=clock)
        self.notifier: MentionNotifier = notifier or NoMentions()
        self.presence = Presence(
            self.clock, ttl_s=config.presence_ttl_s, max_devices=config.max_devices_per_user
        )
        self.rates = UserRates(
            self.clock, rate_per_s=config.send_rate_per_s, burst=config.send_burst
        )
        self.followers = Followers(self.clock, max_bytes=config.follower_buffer_bytes)
        self.typed_at: dict[tuple[str, str], float] = {}  #: (room, user) -> last passed on
        self._background: set[asyncio.Future[None]] = set()

    def published(self, room: str, event: Event) -> None:
        self.followers.post(room, Post("event", room, event))

    def _now(self) -> float:
        return self.clock.time()

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("chat background work failed: %r", task.exception())

    # --- rooms ----------------------------------------------------------------------

    async def create_room(
        self,
        room: str,
        kind: str,
        name: str,
        topic: str,
        owner: str,
        owner_name: str,
        *,
        key: str | None = None,
    ) -> dict[str, Any]:
        if kind not in ("public", "private"):
            raise InvalidInput("a room is public or private")
        name, topic = check_name(name), check_topic(topic)
        result, _ = await self._write(
            "create_room",
            key=key,
            room=room,
            kind=kind,
            name=name,
            topic=topic,
            owner=owner,
            owner_name=owner_name,
            epoch=secrets.token_hex(8),
            at=self._now(),
        )
        return dict(result["room"])

    async def claim_direct(self, user: str, room: str) -> bool:
        claims = self.state.direct_claims.get(user, [])
        if room in claims:
            return True
        result, _ = await self._write("claim_direct", user=user, room=room)
        return bool(result)

    async def release_direct(self, user: str, room: str) -> bool:
        if room not in self.state.direct_claims.get(user, []):
            return True
        await self._write("release_direct", user=user, room=room)
        return True

    async def direct_room(self, room: str, user: str) -> dict[str, Any] | None:
        """The direct room ``room`` if it exists and ``user`` is in it, else None."""
        state = self.rooms.get(room)
        if state is None or user not in state.members:
            return None
        return state.summary(user)

    async def create_direct(
        self, room: str, user: str, username: str, peer: str, peer_name: str
    ) -> dict[str, Any]:
        result, _ = await self._write(
            "create_direct",
            room=room,
            user=user,
            username=username,
            peer=peer,
            peer_name=peer_name,
            epoch=secrets.token_hex(8),
            at=self._now(),
        )
        return {"room": result["room"], "created": result["created"]}

    async def delete_room(self, room: str, user: str) -> dict[str, Any]:
        self._room(room).require_member(user)
        result, fresh = await self._write("delete_room", room=room, user=user, at=self._now())
        if fresh:
            self.followers.post(room, Post("gone", room))
            self.followers.forget_room(room)
            self.presence.drop_room(room)
            self.visible.pop(room, None)
        return dict(result)

    async def room(self, room: str, user: str) -> dict[str, Any]:
        state = self._room(room)
        state.require_visible(user)
        return state.summary(user)

    async def update_room(
        self,
        room: str,
        user: str,
        *,
        name: str | None = None,
        topic: str | None = None,
        slow_mode_s: float | None = None,
    ) -> dict[str, Any]:
        name = None if name is None else check_name(name)
        topic = None if topic is None else check_topic(topic)
        result, _ = await self._write(
            "update_room",
            room=room,
            user=user,
            name=name,
            topic=topic,
            slow_mode_s=slow_mode_s,
            at=self._now(),
        )
        return dict(result["room"])

    async def archive(self, room: str, user: str, archived: bool) -> dict[str, Any]:
        result, _ = await self._write(
            "archive", room=room, user=user, archived=archived, at=self._now()
        )
        return dict(result["room"])

    async def rooms_of(self, user: str, after: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Summaries (with the unread count) of ``user``'s rooms with ids above ``after``."""
        ids = sorted(r for r in self.memberships.get(user, ()) if r > after)[:limit]
        return [self.rooms[r].summary(user) for r in ids]

    async def invites_of(self, user: str) -> list[dict[str, Any]]:
        return [self.rooms[r].summary(user) for r in sorted(self.invited.get(user, ()))]

    async def members(
        self, room: str, user: str, after: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        state = self._room(room)
        state.require_member(user)
        return list(state.member_list(after, check_limit(limit)))

    async def pending(self, room: str, user: str) -> dict[str, Any]:
        """Invitations, join requests and bans, for the room's moderators."""
        state = self._room(room)
        state.require_rank(user, "moderator")

        def people(entries: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"user_id": u, **dataclasses.asdict(v)} for u, v in sorted(entries.items())]

        return {
            "invites": people(state.invites),
            "requests": people(state.requests),
            "bans": people(state.bans),
        }

    # --- membership -----------------------------------------------------------------

    async def join(self, room: str, user: str, username: str) -> dict[str, Any]:
        self._room(room)
        result, _ = await self._write(
            "join", room=room, user=user, username=username, at=self._now()
        )
        return {"status": result["status"], "room": result["room"]}

    async def leave(self, room: str, user: str) -> None:
        await self._write("leave", room=room, user=user, at=self._now())
        self.presence.remove_user(room, user)

    async def invite(self, room: str, by: str, user: str, username: str) -> str:
        result, _ = await self._write(
            "invite", room=room, by=by, user=user, username=username, at=self._now()
        )
        return str(result["status"])

    async def uninvite(self, room: str, by: str, user: str) -> None:
        await self._write("uninvite", room=room, by=by, user=user, at=self._now())

    async def approve(self, room: str, by: str, user: str) -> None:
        await self._write("approve", room=room, by=by, user=user, at=self._now())

    async def deny(self, room: str, by: str, user: str) -> None:
        await self._write("deny", room=room, by=by, user=user, at=self._now())

    async def set_role(self, room: str, by: str, user: str, role: str) -> None:
        await self._write("set_role", room=room, by=by, user=user, role=role, at=self._now())

    async def kick(self, room: str, by: str, user: str) -> None:
        await self._write("kick", room=room, by=by, user=user, at=self._now())
        self.presence.remove_user(room, user)

    async def ban(
        self, room: str, by: str, user: str, *, duration_s: float | None = None, reason: str = ""
    ) -> dict[str, Any]:
        if not isinstance(reason, str) or len(reason) > 500:
            raise InvalidInput("a reason is at most 500 characters")
        now = self._now()
        until = None if duration_s is None else now + duration_s
        result, _ = await self._write(
            "ban", room=room, by=by, user=user, until=until, reason=reason, at=now
        )
        self.presence.remove_user(room, user)
        return {"until": result["until"]}

    async def unban(self, room: str, by: str, user: str) -> None:
        await self._write("unban", room=room, by=by, user=user, at=self._now())

    async def mute(
        self, room: str, by: str, user: str, *, duration_s: float | None = None
    ) -> dict[str, Any]:
        now = self._now()
        until = None if duration_s is None else now + duration_s
        result, _ = await self._write("mute", room=room, by=by, user=user, until=until, at=now)
        return {"until": result["until"]}

    async def unmute(self, room: str, by: str, user: str) -> None:
        await self._write("unmute", room=room, by=by, user=user, at=self._now())

    # --- messages -------------------------------------------------------------------

    async def send(
        self,
        room: str,
        user: str,
        text: str,
        *,
        client_id: str = "",
        reply_to: int = 0,
        mentions: tuple[str, ...] = (),
        key: str | None = None,
    ) -> dict[str, Any]:
        """Send a message; answered once it is durable. ``key`` (the client message id,
        qualified by sender and room) makes a repeat answer the first send again."""
        [answer] = await self.send_many(
            [
                {
                    "room": room,
                    "user": user,
                    "text": text,
                    "client_id": client_id,
                    "reply_to": reply_to,
                    "mentions": tuple(mentions),
                    "key": key,
                }
            ]
        )
        if isinstance(answer, RealmError):
            raise answer
        return answer

    async def send_many(self, sends: list[dict[str, Any]]) -> list[dict[str, Any] | RealmError]:
        """Several sends (each the keyword arguments of ``send``) in one call, as a
        replica's client batches them: applied in order, committed together. Each
        answer is the send's result, or the error that refused it."""
        started: list[tuple[Any, asyncio.Future[int] | None, dict[str, Any]] | RealmError] = []
        for item in sends:
            try:
                started.append(await self._start_send(**item))
            except RealmError as error:
                started.append(error)
        answers: list[dict[str, Any] | RealmError] = []
        for begun in started:
            if isinstance(begun, RealmError):
                answers.append(begun)
                continue
            result, committed, item = begun
            if committed is None:  # a repeat of a durable send
                answers.append({**result, "duplicate": True})
                continue
            await committed
            if result["mentions"]:
                self._notify(item["room"], result, item["user"], item["text"])
            answers.append({**result, "duplicate": False})
        return answers

    async def _start_send(
        self,
        room: str,
        user: str,
        text: str,
        client_id: str = "",
        reply_to: int = 0,
        mentions: tuple[str, ...] = (),
        key: str | None = None,
    ) -> tuple[Any, asyncio.Future[int] | None, dict[str, Any]]:
        """Check and apply one send; its result and the commit to await (None for a
        repeated key, whose first send is durable). Suspends only for a repeat whose
        first send is still being committed."""
        check_text(text, self.config.max_message_bytes)
        check_client_id(client_id)
        check_seq(reply_to, "reply_to")
        state = self._room(room)
        item = {"room": room, "user": user, "text": text}
        if key is not None:
            first = await self.committed_reply(key)
            if first is not None:
                return first[1], None, item
        state.require_member(user)
        self.rates.take(user)
        wanted = self._mentions(state, text, tuple(mentions))
        result, committed = self._begin(
            "send",
            key=key,
            room=room,
            user=user,
            text=text,
            client_id=client_id,
            reply_to=reply_to,
            mentions=wanted,
            at=self._now(),
        )
        return result, committed, item

    def _mentions(self, room: Room, text: str, explicit: tuple[str, ...]) -> tuple[str, ...]:
        """Members mentioned by id or by @username (the room checks membership again)."""
        if not isinstance(explicit, tuple | list) or not all(isinstance(u, str) for u in explicit):
            raise InvalidInput("mentions is a list of user ids")
        found = list(explicit)
        if "@" in text:
            names = mentioned_names(text)
            if names:
                by_name = {m.username.casefold(): u for u, m in room.members.items()}
                found.extend(by_name[n] for n in names if n in by_name)
        return tuple(dict.fromkeys(found))

    def _notify(self, room: str, result: dict[str, Any], user: str, text: str) -> None:
        state = self.rooms.get(room)
        if state is None:
            return
        sender = state.members.get(user)
        for mentioned in result["mentions"]:
            mention = Mention(
                mentioned,
                room,
                state.name,
                result["seq"],
                result["at"],
                user,
                sender.username if sender else "",
                text,
            )
            self._in_background(self.notifier.notify(mention))

    async def edit(self, room: str, user: str, seq: int, text: str) -> dict[str, Any]:
        check_text(text, self.config.max_message_bytes)
        check_seq(seq)
        self._room(room).require_member(user)
        self.rates.take(user)
        result, _ = await self._write(
            "edit", room=room, user=user, seq=seq, text=text, at=self._now()
        )
        return dict(result)

    async def delete_message(self, room: str, user: str, seq: int) -> dict[str, Any]:
        check_seq(seq)
        state = self._room(room)
        state.require_member(user)
        message = state.message(seq)
        if message.deleted:
            state.delete(user, seq, self._now())  # the checks only: it changes nothing now
            return {"seq": 0, "at": None}
        self.rates.take(user)
        result, _ = await self._write(
            "delete_message", room=room, user=user, seq=seq, at=self._now()
        )
        return dict(result)

    async def react(
        self, room: str, user: str, seq: int, emoji: str, on: bool = True
    ) -> dict[str, Any]:
        check_seq(seq)
        check_emoji(emoji)
        state = self._room(room)
        state.require_member(user)
        message = state.message(seq)
        users = message.reactions.get(emoji, [])
        if (user in users) == bool(on) and not message.deleted:
            return {"seq": 0, "at": None}  # changes nothing
        self.rates.take(user)
        result, _ = await self._write(
            "react", room=room, user=user, seq=seq, emoji=emoji, on=bool(on), at=self._now()
        )
        return dict(result)

    async def read(self, room: str, user: str, seq: int) -> int:
        """Mark the room read up to ``seq``; the member's read marker."""
        check_seq(seq)
        state = self._room(room)
        member = state.require_member(user)
        if min(seq, state.last_seq) <= member.last_read:
            return member.last_read
        result, _ = await self._write("read", room=room, user=user, seq=seq)
        self.followers.post(
            room, Post("receipt", room, user=user, username=member.username, seq=result)
        )
        return int(result)

    # --- reading --------------------------------------------------------------------

    def _readable(self, room: str, user: str | None) -> Room:
        state = self._room(room)
        if user is not None:
            state.require_member(user)
        state.trim(self._now(), self.limits)
        return state

    async def history(
        self,
        room: str,
        user: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """Messages (current state, tombstones included) after ``after`` oldest first, or
        the latest before ``before``; only what is posted (committed)."""
        state = self._readable(room, user)
        check_limit(limit)
        visible = self.visible.get(room, 0)
        upto = visible + 1 if before is None else min(check_seq(before, "before"), visible + 1)
        page = state.messages_page(
            after=None if after is None else check_seq(after, "after"), before=upto, limit=limit
        )
        page = [m for m in page if m.seq <= visible]
        return {
            "messages": [m.public(user) for m in page],
            "first_seq": state.first_kept(),
            "last_seq": visible,
            "epoch": state.epoch,
        }

    async def events(
        self,
        room: str,
        user: str | None,
        *,
        after: int,
        epoch: str | None = None,
        limit: int = EVENTS_PAGE,
    ) -> dict[str, Any]:
        """Events after ``after`` (what a resuming client missed), up to what is posted.

        ``recovered`` is False when they cannot all be given: ``epoch`` names another
        incarnation of the room (none are given then), history no longer reaches back
        to ``after + 1`` (what is kept is given), or ``after`` is beyond the room.
        """
        state = self._readable(room, user)
        check_seq(after, "after")
        limit = min(check_limit(limit), EVENTS_PAGE)
        visible = self.visible.get(room, 0)
        first = state.first_kept()
        body: dict[str, Any] = {"epoch": state.epoch, "first_seq": first, "last_seq": visible}
        if (epoch is not None and epoch != state.epoch) or after > visible:
            return body | {"events": [], "recovered": False}
        events = state.events_after(after, visible, limit)
        return body | {"events": events, "recovered": after + 1 >= first}

    async def search(
        self,
        room: str,
        user: str,
        *,
        text: str = "",
        sender: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        if not isinstance(text, str) or len(text) > MAX_QUERY_CHARS:
            raise InvalidInput(f"a search is at most {MAX_QUERY_CHARS} characters")
        words = text.casefold().split()
        if not words and sender is None:
            raise InvalidInput("search by text, by sender, or both")
        state = self._readable(room, user)
        visible = self.visible.get(room, 0)
        upto = visible + 1 if before is None else min(check_seq(before, "before"), visible + 1)
        found = state.search(words, sender, upto, check_limit(limit))
        return [m.public(user) for m in found]

    # --- live: followers, presence, typing ------------------------------------------

    async def open_room(
        self,
        follower: str,
        room: str,
        user: str,
        username: str,
        *,
        device: str | None,
        generation: int,
        join: bool = True,
    ) -> dict[str, Any]:
        """A connection of ``follower``'s opens ``room`` for ``user``: it joins the room
        first when it may without asking (public, or invited) and ``join``; the
        follower then follows the room; ``device``, if given, is present in it. The
        room, the seq posted so far, and the presence list with its version."""
        state = self._room(room)
        state.require_visible(user)
        if user not in state.members:
            if not join or (state.kind != "public" and user not in state.invites):
                raise NotAMember(room=room) if state.kind == "public" else RoomNotFound(room=room)
            await self.join(room, user, username)
            state = self._room(room)
        state.require_member(user)
        if device is not None and not self.presence.add(Device(room, user, username, device)):
            raise LimitReached(
                "this user has as many connections in the room as allowed",
                limit=self.config.max_devices_per_user,
            )
        self.followers.watch(follower, room, generation)
        version, users = self.presence.listing(room)
        return {
            "room": state.summary(user),
            "visible_seq": self.visible.get(room, 0),
            "presence": {"version": version, "users": users},
        }

    def unwatch(self, follower: str, room: str, generation: int) -> None:
        """The follower has had no connection in ``room`` since ``generation``."""
        self.followers.unwatch(follower, room, generation)

    def close(self, room: str, user: str, device: str) -> None:
        """A connection left ``room``: its device is no longer present."""
        self.presence.remove(room, user, device)

    def refresh(self, devices: list[Device]) -> int:
        """Devices a replica holds, still there: each stays present ``presence_ttl_s``
        more (one the shard forgot is added again, if its user is still a member)."""
        kept = 0
        for device in devices:
            state = self.rooms.get(device.room)
            if state is not None and device.user in state.members and self.presence.add(device):
                kept += 1
        return kept

    def rejoin(
        self, follower: str, rooms: dict[str, int], devices: list[Device]
    ) -> dict[str, int | None]:
        """A follower the shard does not know (it restarted, or dropped the follower)
        follows ``rooms`` (room -> generation) again and reports its ``devices``.
        Each room's presence is announced, then its whole list is posted to this
        follower. Answers each room's posted seq (None: the room is gone)."""
        self.followers.register(follower)
        answer: dict[str, int | None] = {}
        for room, generation in rooms.items():
            if room in self.rooms:
                self.followers.watch(follower, room, generation)
                answer[room] = self.visible.get(room, 0)
            else:
                answer[room] = None
        self.refresh(devices)
        for room, seq in answer.items():
            if seq is not None:
                self._announce(room)
                version, users = self.presence.listing(room)
                self.followers.post_to(
                    follower, Post("presence_state", room, version=version, users=tuple(users))
                )
            else:
                self.followers.post_to(follower, Post("gone", room))
        return answer

    async def pull(self, follower: str, *, after: int, timeout_s: float) -> list[tuple[int, Post]]:
        """Acknowledge up to ``after``; return later posts, waiting up to ``timeout_s``."""
        return await self.followers.pull(follower, after=after, timeout_s=timeout_s)

    def unfollow(self, follower: str) -> None:
        self.followers.unfollow(follower)

    def _announce(self, room: str) -> None:
        diff = self.presence.flush(room)
        if diff is not None:
            self.followers.post(
                room,
                Post("presence", room, version=diff.version, users=diff.joins, leaves=diff.leaves),
            )

    def expire_presence(self) -> int:
        """Devices not refreshed for ``presence_ttl_s`` leave; how many rooms changed."""
        return len(self.presence.expire())

    def announce_presence(self) -> int:
        """Post each room's presence diff since it was last announced; how many rooms."""
        rooms = self.presence.dirty()
        for room in rooms:
            self._announce(room)
        return len(rooms)

    async def presence_of(self, room: str, user: str) -> list[dict[str, Any]]:
        """Who is present in the room now, with how many devices each."""
        state = self._room(room)
        state.require_member(user)
        counts = self.presence.devices(room)
        return [
            {
                "user_id": u,
                "username": state.members[u].username if u in state.members else "",
                "devices": n,
            }
            for u, n in sorted(counts.items())
        ]

    async def typing(self, room: str, user: str) -> bool:
        """Pass ``user``'s typing indicator on, at most once per ``typing_throttle_s``."""
        state = self._room(room)
        member = state.require_member(user)
        if state.archived:
            return False
        now = self.clock.now()
        last = self.typed_at.get((room, user))
        if last is not None and now - last < self.config.typing_throttle_s:
            return False
        self.typed_at[(room, user)] = now
        self.followers.post(room, Post("typing", room, user=user, username=member.username))
        return True

    def sweep(self) -> None:
        """Forget what is only memory: typing times and write allowances past use."""
        cutoff = self.clock.now() - self.config.typing_throttle_s
        for key in [k for k, at in self.typed_at.items() if at < cutoff]:
            del self.typed_at[key]
        self.rates.forget_full()

    def __repr__(self) -> str:
        return (
            f"<ChatShard rooms={len(self.rooms)} followers={len(self.followers)} "
            f"devices={len(self.presence)} posted={self.followers.posted}>"
        )


# --- the actor --------------------------------------------------------------------------

#: How often a shard forgets followers that stopped pulling, and after how long.
FOLLOWER_SWEEP_S = 30.0
FOLLOWER_IDLE_S = 90.0
#: How often silent devices are expired (presence changes are announced every
#: ``presence_batch_s``).
EXPIRY_SWEEP_S = 1.0


class _ChatShardProcess(ChatShard):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        config = ChatSettings.of(settings)
        super().__init__(config, notifier=PushMentions(settings))
        self.restarts = await recover(self, settings, name)
        self._loops = [
            every(self.clock, config.presence_batch_s, self.announce_presence),
            every(self.clock, EXPIRY_SWEEP_S, self.expire_presence),
            every(self.clock, FOLLOWER_SWEEP_S, lambda: self.followers.drop_idle(FOLLOWER_IDLE_S)),
            every(self.clock, FOLLOWER_SWEEP_S, self.sweep),
        ]

    async def ping(self) -> int:
        return len(self.rooms)

    async def stats(self) -> dict[str, Any]:
        return {
            "rooms": len(self.rooms),
            "followers": len(self.followers),
            "devices": len(self.presence),
            "posted": self.followers.posted,
            "restarts": self.restarts,
            "node_id": ray.get_runtime_context().get_node_id(),
        }


#: Durable rooms; calls in flight at a crash are retried (writes carry keys where
#: a repeat would matter: sends by client message id).
ChatShardActor = remote_actor(
    _ChatShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)

__all__ = [
    "EVENTS_PAGE",
    "SHARD_PREFIX",
    "ChatShard",
    "ChatShardActor",
]
