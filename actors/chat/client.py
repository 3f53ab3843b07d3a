"""Chat's Python API: rooms, messages and live delivery, for ``apps.chat`` and other services.

Rooms live on the ``ChatShard`` actors, placed by rendezvous hashing of their
ids; a user's own public and private rooms get ids that hash to the shard of
the user (``user:<id>``), so their quota is counted in one place. Every call
that names a room goes to its shard; the room list asks every shard.

Live delivery: a client (one per Serve replica) is one follower of every
shard, as pub/sub's is. A connection opens a room (``open``) and gets a
``Watch``: the room's events from a cursor on, in order, with no gap and no
duplicate, plus presence, typing and receipts, handed to the connection's
``sink``. Per room the client keeps one ``Feed``, which follows the room on
its shard and hands each post to every watch of the room, rendered once
(``render``). The feed keeps the room's events contiguous: when the next event
skips ahead (the shard restarted, or dropped this follower as too far
behind), it first fetches the missing ones from the shard's history. A watch
opened with a resume point ``(seq, epoch)`` first gets the history after
``seq`` (``catch_up``), then the live events behind it.

Presence: each connection that joins a room is one device there. The client
refreshes its devices on their shards every third of ``presence_ttl_s``, and
after a shard restarts it follows the shard's rooms again and reports every
device (``rejoin``), so presence is rebuilt from the connections that exist.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from actors.auth.client import AuthClient
from actors.chat.errors import RoomNotFound
from actors.chat.model import (
    MAX_DURATION_S,
    MAX_PAGE,
    Device,
    Event,
    Post,
    check_client_id,
    check_duration,
    check_kind,
    check_limit,
    check_room_id,
    check_seq,
    check_slow_mode,
    check_user_id,
    direct_room_id,
)
from actors.chat.settings import ChatSettings
from actors.chat.shard import EVENTS_PAGE, SHARD_PREFIX, ChatShardActor
from actors.runtime.batching import Coalescer
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import InvalidInput, NotFound, RealmError
from actors.runtime.fanout import follow
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef

log = logging.getLogger(__name__)

#: How long a follower's long-poll waits before answering empty.
PULL_TIMEOUT_S = 10.0
#: Posts a feed holds while it closes a gap; past it the oldest go (the gap grows, and
#: the next fetch covers it).
FEED_PENDING_MAX = 10_000

#: Most sends in one call to a shard.
SEND_BATCH = 500
#: A watch's sink: each post, and its text as rendered once for every watch of the room.
Sink = Callable[[Post, str], None]


def no_render(post: Post) -> str:
    return ""


class UserDirectory(Protocol):
    async def username(self, user_id: str) -> str | None:
        """The username of the user ``user_id``, or None if there is no such user."""

    async def close(self) -> None: ...


class AuthDirectory:
    """Users as the auth service knows them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._auth: AuthClient | None = None

    async def username(self, user_id: str) -> str | None:
        if self._auth is None:
            self._auth = AuthClient(self.settings)
        try:
            user: dict[str, Any] = await self._auth.users.call("user", user_id)
        except NotFound:
            return None
        return None if user.get("disabled") else str(user["username"])

    async def close(self) -> None:
        if self._auth is not None:
            await self._auth.close()


# --- one connection's view of one room ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Where a watch starts (``start``: the seq before the first it hands on), the
    events it missed since, and whether those are all it missed (``recovered``)."""

    start: int
    history: list[tuple[Post, str]]
    recovered: bool | None


class Watch:
    """One connection's view of one room: its events in order from ``cursor`` on,
    and presence, typing and receipts, handed to ``sink``. It ends (``on_end``)
    when its user leaves the room (left, kicked, banned) or the room is deleted."""

    def __init__(
        self,
        room: str,
        user: str,
        username: str,
        device: str | None,
        sink: Sink,
        on_end: Callable[[Watch, str], None],
    ) -> None:
        self.room, self.user, self.username, self.device = room, user, username, device
        self.sink = sink
        self.on_end = on_end
        self.cursor = 0  #: the last seq handed to the sink
        self.presence_version = 0  #: of the last presence list or diff handed on
        self.catching_up = True
        self.backlog: list[tuple[Post, str]] = []
        self.ended: str | None = None

    def offer(self, post: Post, text: str) -> None:
        if self.ended is not None:
            return
        if self.catching_up:
            if post.kind not in ("typing", "receipt"):
                self.backlog.append((post, text))
            return
        self._deliver(post, text)

    def begin(self, cursor: int, history: list[tuple[Post, str]]) -> None:
        """Start at ``cursor``: hand on ``history`` (events after it), then what came meanwhile."""
        self.cursor = cursor
        backlog, self.backlog = self.backlog, []
        self.catching_up = False
        for post, text in [*history, *backlog]:
            if self.ended is None:
                self._deliver(post, text)

    def _deliver(self, post: Post, text: str) -> None:
        kind = post.kind
        if kind == "event":
            event = post.event
            assert event is not None
            if event.seq <= self.cursor:
                return
            self.cursor = event.seq
            self.sink(post, text)
            if (
                event.kind == "member"
                and event.subject == self.user
                and event.action in ("left", "kicked", "banned")
            ):
                self.end(event.action)
        elif kind in ("presence", "presence_state"):
            if post.version <= self.presence_version:
                return
            self.presence_version = post.version
            self.sink(post, text)
        elif kind == "gone":
            self.sink(post, text)
            self.end("deleted")
        else:
            self.sink(post, text)

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.on_end(self, reason)

    def __repr__(self) -> str:
        return f"<Watch {self.room} user={self.user} cursor={self.cursor}>"


# --- one room's feed on this replica ------------------------------------------------------


class Feed:
    """The posts of one room on this replica, events kept contiguous, to its watches."""

    def __init__(self, client: ChatClient, room: str, generation: int) -> None:
        self.client = client
        self.room = room
        self.generation = generation
        self.watches: set[Watch] = set()
        self.last_seq: int | None = None  #: the last event handed on (None: not started)
        self.pending: list[Post] = []  #: waiting for the start or for a gap to close
        self.wanted = 0  #: the highest seq known to exist
        self.filling: asyncio.Task[None] | None = None

    def start(self, seq: int) -> None:
        """The first position: everything after ``seq`` comes through this feed."""
        if self.last_seq is None:
            self.last_seq = seq
            self.wanted = max(self.wanted, seq)
            self._drain()

    def deliver(self, post: Post) -> None:
        if post.event is not None:
            self.wanted = max(self.wanted, post.event.seq)
        if self.last_seq is None or self.filling is not None or self.pending:
            self.pending.append(post)
            if len(self.pending) > FEED_PENDING_MAX:
                self.pending.pop(0)
            if self.last_seq is not None and self.filling is None:
                self._drain()
            return
        self._route(post)

    def reach(self, seq: int) -> None:
        """Events up to ``seq`` exist: fetch any this feed has not handed on."""
        self.wanted = max(self.wanted, seq)
        self._drain()

    def _drain(self) -> None:
        if self.last_seq is None:
            return
        while self.filling is None:
            if self.pending:
                post = self.pending[0]
                if post.event is not None and post.event.seq > self.last_seq + 1:
                    self._fill(post.event.seq - 1)
                    return
                self.pending.pop(0)
                self._route(post)
            elif self.wanted > self.last_seq:
                self._fill(self.wanted)
                return
            else:
                return

    def _fill(self, upto: int) -> None:
        self.filling = asyncio.create_task(self._fetch(upto))

    async def _fetch(self, upto: int) -> None:
        assert self.last_seq is not None
        after = self.last_seq
        try:
            events = await self.client._events_between(self.room, after, upto)
        except Exception as error:  # the room gone, the shard away: move on past the gap
            log.warning("chat feed %s could not fetch %d..%d: %r", self.room, after, upto, error)
            events = []
        for event in events:
            self._route(Post("event", self.room, event))
        if self.last_seq < upto:
            self.last_seq = upto  # trimmed from history: the watches see a jump
        self.filling = None
        self._drain()

    def _route(self, post: Post) -> None:
        if post.event is not None:
            assert self.last_seq is not None
            if post.event.seq <= self.last_seq:
                return
            self.last_seq = post.event.seq
        if not self.watches:
            return
        text = self.client.render(post)
        for watch in list(self.watches):
            watch.offer(post, text)

    def __repr__(self) -> str:
        return f"<Feed {self.room} watches={len(self.watches)} last_seq={self.last_seq}>"


# --- the client ---------------------------------------------------------------------------


class ChatClient:
    def __init__(
        self,
        settings: Settings,
        *,
        render: Callable[[Post], str] = no_render,
        directory: UserDirectory | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.config = ChatSettings.of(settings)
        self.shards = Shards(ChatShardActor, SHARD_PREFIX, self.config.shards, settings)
        self.render = render
        self.directory: UserDirectory = directory or AuthDirectory(settings)
        self.clock = clock or SystemClock()
        self.follower = uuid.uuid4().hex
        self.feeds: dict[str, Feed] = {}
        self.devices: dict[str, Device] = {}
        self._generations = itertools.count(1)
        self._device_ids = itertools.count(1)
        self._tasks: list[asyncio.Task[Any]] = []
        #: Per shard: sends made at once become one ``send_many`` call.
        self._senders = [
            Coalescer(functools.partial(self._send_batch, index), max_batch=SEND_BATCH)
            for index in range(len(self.shards))
        ]

    async def start(self) -> None:
        await self.shards.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        await asyncio.gather(
            *(shard.call("unfollow", self.follower) for shard in self.shards),
            self.directory.close(),
            return_exceptions=True,
        )

    def _shard(self, room: str) -> ActorRef:
        return self.shards.owner(check_room_id(room))

    def _home(self, user: str) -> ActorRef:
        return self.shards.owner(f"user:{user}")

    def new_room_id(self, owner: str) -> str:
        """A fresh room id that hashes to ``owner``'s own shard (where their quota is)."""
        home = self.shards.index(f"user:{owner}")
        while True:
            room = "r-" + secrets.token_hex(12)
            if self.shards.index(room) == home:
                return room

    # --- rooms ----------------------------------------------------------------------

    async def create_room(
        self,
        owner: str,
        owner_name: str,
        *,
        kind: str,
        name: str,
        topic: str = "",
        key: str | None = None,
    ) -> dict[str, Any]:
        """A public or private room owned by ``owner`` (a repeated ``key`` answers the same)."""
        check_kind(kind)
        room = self.new_room_id(owner)
        created: dict[str, Any] = await self._home(owner).call(
            "create_room",
            room,
            kind,
            name,
            topic,
            owner,
            owner_name,
            key=None if key is None else f"create:{owner}:{key}",
        )
        return created

    async def create_direct(self, user: str, username: str, peer: str) -> dict[str, Any]:
        """The direct room of ``user`` and ``peer`` (made if there is none): ``room`` and
        ``created``. It counts against ``user``'s direct rooms only if it is new."""
        check_user_id(peer)
        if peer == user:
            raise InvalidInput("a direct room is with someone else")
        room = direct_room_id(user, peer)
        shard = self._shard(room)
        found = await shard.call("direct_room", room, user)
        if found is not None:
            return {"room": found, "created": False}
        peer_name = await self.directory.username(peer)
        if peer_name is None:
            raise NotFound("no such user", user_id=peer)
        home = self._home(user)
        await home.call("claim_direct", user, room)
        try:
            answer: dict[str, Any] = await shard.call(
                "create_direct", room, user, username, peer, peer_name
            )
        except BaseException:
            await home.call("release_direct", user, room)
            raise
        if not answer["created"]:  # the peer made it meanwhile
            await home.call("release_direct", user, room)
        return answer

    async def room(self, room: str, user: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._shard(room).call("room", room, user)
        return found

    async def rooms(self, user: str, *, after: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """``user``'s rooms with ids above ``after``, by id, with their unread counts."""
        check_limit(limit)
        pages = await self.shards.call_all("rooms_of", user, after, limit)
        merged = sorted((room for page in pages for room in page), key=lambda r: r["id"])
        return merged[:limit]

    async def invites(self, user: str) -> list[dict[str, Any]]:
        pages = await self.shards.call_all("invites_of", user)
        return sorted((room for page in pages for room in page), key=lambda r: r["id"])

    async def update_room(self, room: str, user: str, **changes: Any) -> dict[str, Any]:
        if changes.get("slow_mode_s") is not None:
            check_slow_mode(changes["slow_mode_s"])
        updated: dict[str, Any] = await self._shard(room).call("update_room", room, user, **changes)
        return updated

    async def archive(self, room: str, user: str, archived: bool = True) -> dict[str, Any]:
        answer: dict[str, Any] = await self._shard(room).call("archive", room, user, archived)
        return answer

    async def delete_room(self, room: str, user: str) -> None:
        answer = await self._shard(room).call("delete_room", room, user)
        if answer["kind"] == "direct":
            await self._home(answer["owner"]).call("release_direct", answer["owner"], room)

    async def members(
        self, room: str, user: str, *, after: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._shard(room).call(
            "members", room, user, after, limit
        )
        return found

    async def pending(self, room: str, user: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._shard(room).call("pending", room, user)
        return found

    # --- membership -----------------------------------------------------------------

    async def join(self, room: str, user: str, username: str) -> dict[str, Any]:
        """Join (public, or invited), or ask to (private): ``status`` is ``joined``,
        ``member`` (already one) or ``requested``."""
        answer: dict[str, Any] = await self._shard(room).call("join", room, user, username)
        return answer

    async def leave(self, room: str, user: str) -> None:
        await self._shard(room).call("leave", room, user)

    async def _known(self, user: str) -> str:
        check_user_id(user)
        name = await self.directory.username(user)
        if name is None:
            raise NotFound("no such user", user_id=user)
        return name

    async def invite(self, room: str, by: str, user: str) -> str:
        """Invite ``user`` (``invited``), or let them in if they asked (``joined``)."""
        shard = self._shard(room)
        await shard.call("room", room, by)  # 404 before the user lookup
        status: str = await shard.call("invite", room, by, user, await self._known(user))
        return status

    async def uninvite(self, room: str, by: str, user: str) -> None:
        await self._shard(room).call("uninvite", room, by, check_user_id(user))

    async def approve(self, room: str, by: str, user: str) -> None:
        await self._shard(room).call("approve", room, by, check_user_id(user))

    async def deny(self, room: str, by: str, user: str) -> None:
        await self._shard(room).call("deny", room, by, check_user_id(user))

    async def set_role(self, room: str, by: str, user: str, role: str) -> None:
        await self._shard(room).call("set_role", room, by, check_user_id(user), role)

    async def kick(self, room: str, by: str, user: str) -> None:
        await self._shard(room).call("kick", room, by, check_user_id(user))

    async def ban(
        self,
        room: str,
        by: str,
        user: str,
        *,
        duration_s: float | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        check_duration(duration_s)
        answer: dict[str, Any] = await self._shard(room).call(
            "ban", room, by, check_user_id(user), duration_s=duration_s, reason=reason
        )
        return answer

    async def unban(self, room: str, by: str, user: str) -> None:
        await self._shard(room).call("unban", room, by, check_user_id(user))

    async def mute(
        self, room: str, by: str, user: str, *, duration_s: float | None = None
    ) -> dict[str, Any]:
        check_duration(duration_s)
        answer: dict[str, Any] = await self._shard(room).call(
            "mute", room, by, check_user_id(user), duration_s=duration_s
        )
        return answer

    async def unmute(self, room: str, by: str, user: str) -> None:
        await self._shard(room).call("unmute", room, by, check_user_id(user))

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
    ) -> dict[str, Any]:
        """Send; answered once durable: ``seq``, ``at``, ``mentions`` (the members
        notified) and ``duplicate`` (a repeated ``client_id`` answers the first send).

        Sends made at once to rooms of one shard go in one call (``send_many``): an
        actor call costs about as much whatever it carries."""
        check_client_id(client_id)
        key = f"send:{room}:{user}:{client_id or uuid.uuid4().hex}"
        index = self.shards.index(check_room_id(room))
        item = {
            "room": room,
            "user": user,
            "text": text,
            "client_id": client_id,
            "reply_to": reply_to,
            "mentions": tuple(mentions),
            "key": key,
        }
        [answer] = await self._senders[index].submit([item])
        if isinstance(answer, RealmError):
            raise answer
        return answer

    async def _send_batch(self, index: int, items: list[dict[str, Any]]) -> list[Any]:
        answers: list[Any] = await self.shards[index].call("send_many", items)
        return answers

    async def edit(self, room: str, user: str, seq: int, text: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._shard(room).call("edit", room, user, seq, text)
        return answer

    async def delete_message(self, room: str, user: str, seq: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self._shard(room).call("delete_message", room, user, seq)
        return answer

    async def react(
        self, room: str, user: str, seq: int, emoji: str, on: bool = True
    ) -> dict[str, Any]:
        answer: dict[str, Any] = await self._shard(room).call("react", room, user, seq, emoji, on)
        return answer

    async def read(self, room: str, user: str, seq: int) -> int:
        marker: int = await self._shard(room).call("read", room, user, seq)
        return marker

    async def typing(self, room: str, user: str) -> bool:
        passed: bool = await self._shard(room).call("typing", room, user)
        return passed

    async def history(
        self,
        room: str,
        user: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        page: dict[str, Any] = await self._shard(room).call(
            "history", room, user, after=after, before=before, limit=limit
        )
        return page

    async def events(
        self, room: str, user: str, *, after: int, epoch: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        page: dict[str, Any] = await self._shard(room).call(
            "events", room, user, after=after, epoch=epoch, limit=limit
        )
        return page

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
        found: list[dict[str, Any]] = await self._shard(room).call(
            "search", room, user, text=text, sender=sender, before=before, limit=limit
        )
        return found

    async def presence(self, room: str, user: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._shard(room).call("presence_of", room, user)
        return found

    async def _events_between(self, room: str, after: int, upto: int) -> list[Event]:
        """Kept events with ``after < seq <= upto`` (no membership check: for feeds)."""
        found: list[Event] = []
        shard = self._shard(room)
        while after < upto:
            page = await shard.call("events", room, None, after=after, limit=EVENTS_PAGE)
            events = [e for e in page["events"] if e.seq <= upto]
            if not events:
                break
            found.extend(events)
            after = events[-1].seq
        return found

    # --- live -----------------------------------------------------------------------

    async def open(
        self,
        room: str,
        user: str,
        username: str,
        *,
        sink: Sink,
        on_end: Callable[[Watch, str], None] = lambda watch, reason: None,
        present: bool = True,
        join: bool = True,
    ) -> tuple[Watch, dict[str, Any]]:
        """Open ``room`` for ``user`` on one connection: join it first if ``join`` and
        it needs no approval; be present there if ``present``. Returns the watch
        (catching up: call ``catch_up`` next) and the room's summary, its posted seq
        (``visible_seq``) and presence list (``presence``: ``version``, ``users``)."""
        shard = self._shard(room)
        feed = self.feeds.get(room)
        if feed is None:
            feed = self.feeds[room] = Feed(self, room, next(self._generations))
        device = f"{self.follower}.{next(self._device_ids)}" if present else None
        watch = Watch(room, user, username, device, sink, on_end)
        feed.watches.add(watch)
        self._start_following()
        try:
            answer: dict[str, Any] = await shard.call(
                "open_room",
                self.follower,
                room,
                user,
                username,
                device=device,
                generation=feed.generation,
                join=join,
            )
        except BaseException:
            feed.watches.discard(watch)
            await self._close_feed_if_idle(feed)
            raise
        if device is not None:
            self.devices[device] = Device(room, user, username, device)
        feed.start(answer["visible_seq"])
        watch.presence_version = answer["presence"]["version"]
        return watch, answer

    async def missed(
        self, watch: Watch, visible_seq: int, resume: tuple[int, str] | None = None
    ) -> CatchUp:
        """Where ``watch`` starts, and what it missed: with ``resume`` (the last seq the
        client has, and the room's epoch it had), the events after that seq.

        ``recovered`` is False when the client missed events it cannot be given (the
        epoch is another incarnation of the room, or history was trimmed past its
        seq); None without ``resume``. Hand it to ``watch.begin``."""
        if resume is None:
            return CatchUp(visible_seq, [], None)
        after, epoch = check_seq(resume[0], "resume seq"), resume[1]
        shard = self._shard(watch.room)
        history: list[tuple[Post, str]] = []
        recovered, cursor = True, after
        while True:
            page = await shard.call(
                "events", watch.room, watch.user, after=cursor, epoch=epoch, limit=EVENTS_PAGE
            )
            if page["epoch"] != epoch or after > page["last_seq"]:
                # another incarnation of the room, or a seq it never had: start from now
                return CatchUp(visible_seq, [], False)
            recovered = recovered and page["recovered"]
            for event in page["events"]:
                post = Post("event", watch.room, event)
                history.append((post, self.render(post)))
            if len(page["events"]) < EVENTS_PAGE:
                return CatchUp(after, history, recovered)
            cursor = page["events"][-1].seq

    async def catch_up(
        self, watch: Watch, visible_seq: int, resume: tuple[int, str] | None = None
    ) -> CatchUp:
        """``missed``, then ``watch.begin``: the watch is live once this returns."""
        caught = await self.missed(watch, visible_seq, resume)
        watch.begin(caught.start, caught.history)
        return caught

    async def close_watch(self, watch: Watch) -> None:
        """The connection is done with the room: no longer present, no longer fed."""
        feed = self.feeds.get(watch.room)
        if feed is not None:
            feed.watches.discard(watch)
        if watch.device is not None and self.devices.pop(watch.device, None) is not None:
            try:
                await self._shard(watch.room).call("close", watch.room, watch.user, watch.device)
            except Exception as error:  # it expires on the shard anyway
                log.warning("could not tell the shard a device left: %r", error)
        if feed is not None:
            await self._close_feed_if_idle(feed)

    async def _close_feed_if_idle(self, feed: Feed) -> None:
        if feed.watches or self.feeds.get(feed.room) is not feed:
            return
        del self.feeds[feed.room]
        if feed.filling is not None:
            feed.filling.cancel()
        try:
            await self._shard(feed.room).call("unwatch", self.follower, feed.room, feed.generation)
        except Exception as error:  # the shard forgets idle rooms when it restarts anyway
            log.warning("could not unwatch room %s: %r", feed.room, error)

    def _start_following(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._follow_shard(index)) for index in range(len(self.shards))
        ]
        self._tasks.append(every(self.clock, self.config.presence_ttl_s / 3, self._refresh))

    def _route(self, post: Post) -> None:
        feed = self.feeds.get(post.room)
        if feed is not None:
            feed.deliver(post)

    async def _follow_shard(self, index: int) -> None:
        shard = self.shards[index]

        async def pull(after: int) -> list[tuple[int, Post]]:
            posts: list[tuple[int, Post]] = await shard.call(
                "pull", self.follower, after=after, timeout_s=PULL_TIMEOUT_S
            )
            return posts

        async def lost(error: BaseException) -> None:
            if isinstance(error, NotFound):  # the shard restarted or dropped us: rejoin
                await self._rejoin(index)

        await follow(pull, self._route, what=f"chat following shard {index}", on_lost=lost)

    def _on_shard(self, index: int, room: str) -> bool:
        return self.shards.index(room) == index

    async def _rejoin(self, index: int) -> None:
        rooms = {r: f.generation for r, f in self.feeds.items() if self._on_shard(index, r)}
        devices = [d for d in self.devices.values() if self._on_shard(index, d.room)]
        answer: dict[str, int | None] = await self.shards[index].call(
            "rejoin", self.follower, rooms, devices
        )
        for room, seq in answer.items():
            feed = self.feeds.get(room)
            if feed is not None and seq is not None and feed.last_seq is not None:
                feed.reach(seq)

    async def _refresh(self) -> None:
        by_shard: dict[int, list[Device]] = {}
        for device in self.devices.values():
            by_shard.setdefault(self.shards.index(device.room), []).append(device)
        await asyncio.gather(
            *(self.shards[i].call("refresh", devices) for i, devices in by_shard.items()),
            return_exceptions=True,
        )

    def __repr__(self) -> str:
        return f"<ChatClient shards={len(self.shards)} feeds={len(self.feeds)}>"


#: The public face of chat to other services and to its app.
__all__ = [
    "MAX_DURATION_S",
    "MAX_PAGE",
    "AuthDirectory",
    "CatchUp",
    "ChatClient",
    "Event",
    "Feed",
    "Post",
    "RoomNotFound",
    "Sink",
    "UserDirectory",
    "Watch",
    "no_render",
]
