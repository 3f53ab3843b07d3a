"""Chat over WebSocket (``GET /chat/ws``): JSON text frames with a ``type``.

::

    -> {"type": "join", "ref": "j1", "room": "r-…", "resume": {"seq": 41, "epoch": "…"}}
    <- {"type": "joined", "ref": "j1", "room": {…}, "last_seq": 45, "epoch": "…",
        "presence": [{"user_id", "username"}], "recovered": true, "missed": 4}
    <- {"type": "event", "room": "r-…", "seq": 42, "kind": "message", …}   (the 4 missed, then live)
    -> {"type": "send", "ref": "s1", "room": "r-…", "text": "hi", "client_id": "c-17",
        "reply_to": null, "mentions": []}
    <- {"type": "sent", "ref": "s1", "room": "r-…", "seq": 46, "at": …, "client_id": "c-17",
        "duplicate": false}
    -> {"type": "edit", "ref", "room", "seq", "text"}     <- {"type": "ok", "ref", "room", "seq"}
    -> {"type": "delete", "ref", "room", "seq"}           <- {"type": "ok", …}
    -> {"type": "react", "ref", "room", "seq", "emoji", "on": true}   <- {"type": "ok", …}
    -> {"type": "read", "ref", "room", "seq"}   <- {"type": "ok", "ref", "room", "last_read"}
    -> {"type": "typing", "room"}                         (no answer; throttled)
    -> {"type": "history", "ref", "room", "before": null, "after": null, "limit": 50}
    <- {"type": "history", "ref", "room", "messages": […], "first_seq", "last_seq", "epoch"}
    -> {"type": "leave", "ref", "room"}   <- {"type": "left", "ref", "room", "reason": "left"}
    -> {"type": "ping", "ref"?}                           <- {"type": "pong", "ref"?}
    <- {"type": "presence", "room", "users": […]}
    <- {"type": "presence_diff", "room", "joins": […], "leaves": […]}
    <- {"type": "typing", "room", "user_id", "username"}
    <- {"type": "receipt", "room", "user_id", "seq"}
    <- {"type": "left", "room", "reason": "kicked" | "banned" | "deleted" | …}
    <- {"type": "error", "ref": "s1", "error": {"code", "message", "details"}}

A frame from the server carries one or more of these JSON messages, one per
line (several when the client is behind). A frame from the client carries
one; frames about one room are handled in the order sent, frames about different
rooms at once (so answers may come in another order: match them by ``ref``). A
bad or refused frame gets an ``error`` with its ``ref`` (if it has a
string one, even when the rest of it is not valid) and changes nothing; the
connection stays open. Any frame counts as a heartbeat: a client
silent for ``REALM_CHAT_HEARTBEAT_TIMEOUT_S`` is closed (4408) and leaves
presence; ping every 10 s. Close codes: 4008 slow consumer (more than
``REALM_CHAT_SEND_BUFFER`` frames or ``REALM_CHAT_SEND_BUFFER_BYTES`` waiting;
reconnect and resume), 4401 the session ended, 4408 heartbeat timeout, 4429
too many frames (``REALM_CHAT_FRAMES_PER_S``), 1009 a frame over the size limit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import Field, TypeAdapter
from ray.exceptions import RayActorError

from actors.auth.client import Principal, SessionVerifier
from actors.chat.client import ChatClient, Post, Watch
from actors.chat.model import MAX_MENTIONS, MAX_PAGE
from actors.chat.ratelimit import UserRates
from actors.chat.settings import EVENT_OVERHEAD_BYTES, ChatSettings
from actors.runtime.clock import Clock
from actors.runtime.errors import (
    Conflict,
    LimitReached,
    RateLimited,
    RealmError,
    Unavailable,
)
from apps import streams
from apps.chat.frames import frame, users
from apps.models import Body
from apps.signin import verifier_of
from apps.streams import CLOSE_TOO_MANY, StreamConnection, open_stream
from apps.streams import MAX_FRAME_BYTES as MAX_FRAME_BYTES

log = logging.getLogger(__name__)

#: Room in a client's frame for the envelope around a message's text.
ENVELOPE_BYTES = 4096
#: What a frame being handled counts against ``frames_in_flight_bytes`` beyond its text.
FRAME_OVERHEAD_BYTES = 1024
#: A connection refused this many frames for their rate in a row is closed (4429).
MAX_REFUSED_FRAMES = 2_000
#: Longest ``ref`` a client may choose.
MAX_REF_CHARS = 64

Ref = Annotated[str, Field(min_length=1, max_length=MAX_REF_CHARS)]
RoomId = Annotated[str, Field(min_length=1, max_length=40)]
Seq = Annotated[int, Field(ge=0)]


# --- frames ---------------------------------------------------------------------


class Resume(Body):
    seq: Seq
    epoch: Annotated[str, Field(min_length=1, max_length=64)]


class JoinFrame(Body):
    type: Literal["join"]
    ref: Ref | None = None
    room: RoomId
    resume: Resume | None = None


class LeaveFrame(Body):
    type: Literal["leave"]
    ref: Ref | None = None
    room: RoomId


class SendFrame(Body):
    type: Literal["send"]
    ref: Ref | None = None
    room: RoomId
    text: str
    client_id: Annotated[str, Field(max_length=64)] = ""
    reply_to: Seq | None = None
    mentions: Annotated[
        list[Annotated[str, Field(max_length=64)]], Field(max_length=MAX_MENTIONS)
    ] = []


class EditFrame(Body):
    type: Literal["edit"]
    ref: Ref | None = None
    room: RoomId
    seq: Seq
    text: str


class DeleteFrame(Body):
    type: Literal["delete"]
    ref: Ref | None = None
    room: RoomId
    seq: Seq


class ReactFrame(Body):
    type: Literal["react"]
    ref: Ref | None = None
    room: RoomId
    seq: Seq
    emoji: Annotated[str, Field(min_length=1, max_length=32)]
    on: bool = True


class ReadFrame(Body):
    type: Literal["read"]
    ref: Ref | None = None
    room: RoomId
    seq: Seq


class TypingFrame(Body):
    type: Literal["typing"]
    ref: Ref | None = None
    room: RoomId


class HistoryFrame(Body):
    type: Literal["history"]
    ref: Ref | None = None
    room: RoomId
    after: Seq | None = None
    before: Seq | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50


class PingFrame(Body):
    type: Literal["ping"]
    ref: Ref | None = None


Frame = Annotated[
    JoinFrame
    | LeaveFrame
    | SendFrame
    | EditFrame
    | DeleteFrame
    | ReactFrame
    | ReadFrame
    | TypingFrame
    | HistoryFrame
    | PingFrame,
    Field(discriminator="type"),
]
FRAME = TypeAdapter(Frame)
#: The scope each frame needs (a signed-in user holds every scope; an API key its own).
WRITES = (SendFrame, EditFrame, DeleteFrame, ReactFrame, ReadFrame, TypingFrame)


def parse_frame(text: str) -> Any:
    return streams.parse_frame(FRAME, text)


def ref_of(text: str) -> str | None:
    """The ``ref`` of a client frame, even of one that is not valid otherwise, so that
    its ``error`` answer names it."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    ref = body.get("ref") if isinstance(body, dict) else None
    return ref if isinstance(ref, str) and 0 < len(ref) <= MAX_REF_CHARS else None


# --- the send buffer ------------------------------------------------------------


class Outbox(streams.Outbox):
    """Lines waiting to be sent to one client, bounded in count and in bytes (each
    line counts its length and ``EVENT_OVERHEAD_BYTES``)."""

    @staticmethod
    def size_of(line: str) -> int:
        return len(line) + EVENT_OVERHEAD_BYTES


class InFlight:
    """Frames one connection has being handled at once, bounded in count and in bytes
    (one always fits): the reader waits for room, which is back pressure on the socket."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.frames = 0
        self.bytes = 0
        self._freed = asyncio.Event()

    async def acquire(self, size: int) -> None:
        while self.frames and (
            self.frames >= self.max_frames or self.bytes + size > self.max_bytes
        ):
            self._freed.clear()
            await self._freed.wait()
        self.frames += 1
        self.bytes += size

    def release(self, size: int) -> None:
        self.frames -= 1
        self.bytes -= size
        self._freed.set()

    def __repr__(self) -> str:
        return f"<InFlight frames={self.frames} bytes={self.bytes}>"


# --- one connection ---------------------------------------------------------------


class Connection(StreamConnection):
    """A chat client's WebSocket: the rooms it joined, and its bounded send buffer."""

    where = "chat WebSocket"
    heartbeat_reason = "no heartbeat: send a ping every 10 s"

    def __init__(
        self,
        websocket: WebSocket,
        client: ChatClient,
        *,
        verifier: SessionVerifier,
        user: Principal,
        credential: str,
        config: ChatSettings,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            websocket,
            verifier=verifier,
            user=user,
            signed_in=credential,
            outbox=Outbox(config.send_buffer, config.send_buffer_bytes),
            keepalive_s=config.keepalive_s,
            max_frame_chars=config.max_message_bytes + ENVELOPE_BYTES,
            heartbeat_timeout_s=config.heartbeat_timeout_s,
            clock=clock,
        )
        self.client, self.credential, self.config = client, credential, config
        self.watches: dict[str, Watch] = {}
        self.joining: set[str] = set()
        self.typed_at: dict[str, float] = {}
        self.frames = UserRates(
            self.clock, rate_per_s=config.frames_per_s, burst=int(4 * config.frames_per_s) + 1
        )
        self.refused = 0
        self._background: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, asyncio.Future[None]] = {}  #: room -> its last frame
        self.in_flight = InFlight(config.frames_in_flight, config.frames_in_flight_bytes)

    def send(self, body: dict[str, Any]) -> None:
        self.send_line(frame(body))

    def _sink(self, post: Post, text: str) -> None:
        self.send_line(text)

    async def release(self) -> None:
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        watches, self.watches = list(self.watches.values()), {}
        await asyncio.gather(*(self.client.close_watch(w) for w in watches), return_exceptions=True)

    async def handle_text(self, text: str) -> None:
        """Check and parse a frame, then handle it: one about a room in that room's lane
        (frames about one room are handled one after the other, in the order sent;
        frames about different rooms at once, up to ``frames_in_flight`` frames and
        ``frames_in_flight_bytes``: a single connection sending to many rooms keeps
        that many sends in flight, each batched with the others on its shard)."""
        ref = None
        try:
            self._take_frame()
            ref = ref_of(text)
            frame_ = parse_frame(text)
            if isinstance(frame_, WRITES):
                self.user.require("chat:write")
        except RealmError as error:
            self.send_error(ref, error)
            return
        room = getattr(frame_, "room", None)
        if room is None:
            await self._answer(frame_, ref)
            return
        size = len(text) + FRAME_OVERHEAD_BYTES
        await self.in_flight.acquire(size)  # the reader waits here: back pressure
        lane = asyncio.ensure_future(self._in_lane(self._lanes.get(room), frame_, ref, size))
        self._lanes[room] = lane
        lane.add_done_callback(functools.partial(self._lane_done, room))

    async def _in_lane(
        self, previous: asyncio.Future[None] | None, f: Any, ref: str | None, size: int
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await self._answer(f, ref)
        finally:
            self.in_flight.release(size)

    def _lane_done(self, room: str, lane: asyncio.Future[None]) -> None:
        if self._lanes.get(room) is lane:
            del self._lanes[room]

    async def _answer(self, f: Any, ref: str | None) -> None:
        try:
            await self._handle(f)
        except RealmError as error:
            self.send_error(ref, error)
        except RayActorError as error:  # a shard that did not come back in time
            log.warning("chat frame failed on an actor: %r", error)
            self.send_error(ref, Unavailable("a chat shard is not available; retry shortly"))
        except Exception:
            log.exception("chat frame failed")
            self.send_error(ref, RealmError())

    def _take_frame(self) -> None:
        try:
            self.frames.take("")
        except RateLimited:
            self.refused += 1
            if self.refused > MAX_REFUSED_FRAMES:
                self.end(CLOSE_TOO_MANY, "too many frames")
            raise
        self.refused = 0

    async def _handle(self, f: Any) -> None:
        user = self.user.user_id
        if isinstance(f, PingFrame):
            self.send({"type": "pong", "ref": f.ref} if f.ref else {"type": "pong"})
        elif isinstance(f, JoinFrame):
            await self._join(f)
        elif isinstance(f, LeaveFrame):
            watch = self.watches.pop(f.room, None)
            if watch is None:
                raise Conflict("this connection has not joined that room", room=f.room)
            await self.client.close_watch(watch)
            self.send({"type": "left", "ref": f.ref, "room": f.room, "reason": "left"})
        elif isinstance(f, SendFrame):
            sent = await self.client.send(
                f.room,
                user,
                f.text,
                client_id=f.client_id,
                reply_to=f.reply_to or 0,
                mentions=tuple(f.mentions),
            )
            self.send(
                {
                    "type": "sent",
                    "ref": f.ref,
                    "room": f.room,
                    "seq": sent["seq"],
                    "at": sent["at"],
                    "client_id": sent["client_id"],
                    "duplicate": sent["duplicate"],
                }
            )
        elif isinstance(f, EditFrame):
            done = await self.client.edit(f.room, user, f.seq, f.text)
            self.send({"type": "ok", "ref": f.ref, "room": f.room, "seq": done["seq"]})
        elif isinstance(f, DeleteFrame):
            done = await self.client.delete_message(f.room, user, f.seq)
            self.send({"type": "ok", "ref": f.ref, "room": f.room, "seq": done["seq"] or None})
        elif isinstance(f, ReactFrame):
            done = await self.client.react(f.room, user, f.seq, f.emoji, f.on)
            self.send({"type": "ok", "ref": f.ref, "room": f.room, "seq": done["seq"] or None})
        elif isinstance(f, ReadFrame):
            marker = await self.client.read(f.room, user, f.seq)
            self.send({"type": "ok", "ref": f.ref, "room": f.room, "last_read": marker})
        elif isinstance(f, TypingFrame):
            now = self.clock.now()
            if now - self.typed_at.get(f.room, -1e18) >= self.config.typing_throttle_s:
                self.typed_at[f.room] = now
                await self.client.typing(f.room, user)
        elif isinstance(f, HistoryFrame):
            page = await self.client.history(
                f.room, user, after=f.after, before=f.before, limit=f.limit
            )
            self.send({"type": "history", "ref": f.ref, "room": f.room, **page})

    async def _join(self, f: JoinFrame) -> None:
        if f.room in self.watches or f.room in self.joining:
            raise Conflict("this connection has joined that room already", room=f.room)
        if len(self.watches) + len(self.joining) >= self.config.max_rooms_per_connection:
            raise LimitReached(
                "this connection has joined as many rooms as allowed",
                limit=self.config.max_rooms_per_connection,
            )
        self.joining.add(f.room)
        try:
            watch, answer = await self.client.open(
                f.room,
                self.user.user_id,
                self.user.username,
                sink=self._sink,
                on_end=self._ended,
                join=self.user.allows("chat:write"),
            )
        finally:
            self.joining.discard(f.room)
        if self.ended.is_set():
            await self.client.close_watch(watch)
            return
        self.watches[f.room] = watch
        room = answer["room"]
        resume = (f.resume.seq, f.resume.epoch) if f.resume is not None else None
        try:
            caught = await self.client.missed(watch, answer["visible_seq"], resume)
        except BaseException:
            self.watches.pop(f.room, None)
            await self.client.close_watch(watch)
            raise
        # The answer first, then what the client missed, then what came meanwhile.
        self.send(
            {
                "type": "joined",
                "ref": f.ref,
                "room": room,
                "last_seq": answer["visible_seq"],
                "epoch": room["epoch"],
                "presence": users(answer["presence"]["users"]),
                "recovered": caught.recovered,
                "missed": len(caught.history),
            }
        )
        watch.begin(caught.start, caught.history)

    def _ended(self, watch: Watch, reason: str) -> None:
        """The room ended for this connection (kicked, banned, left elsewhere, deleted)."""
        if self.watches.get(watch.room) is watch:
            del self.watches[watch.room]
            self.send({"type": "left", "ref": None, "room": watch.room, "reason": reason})
            task = asyncio.ensure_future(self.client.close_watch(watch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)


def router(client: ChatClient, config: ChatSettings) -> APIRouter:
    routes = APIRouter()

    @routes.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await open_stream(ws, "chat:read")
        if signed_in is None:
            return
        user, credential = signed_in
        connection = Connection(
            ws, client, verifier=verifier_of(ws), user=user, credential=credential, config=config
        )
        await connection.run()

    return routes
