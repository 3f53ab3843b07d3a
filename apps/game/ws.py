"""The game's WebSocket, ``GET /game/ws?ticket=``: frames in docs/game.md, "Protocol".

A connection plays in one room at a time. Each replica holds one ``Hub``:
per room it has players in, one ``RoomLink`` keeps one ``pull`` outstanding on
the room's actor and hands the frames it answers to the connections (one
actor call per replica per patch, whatever the number of players), and sends
the connections' inputs in batches (one call per ``INPUT_BATCH_S``). When a
pull answers with a new epoch (the room's actor was restarted), the link
re-attaches every connection it holds, and each gets a full state marked
``"resync": true``.

A ``Connection`` is the shared WebSocket skeleton (``apps.streams``: sign-in,
the bounded send buffer, the session and heartbeat watches, close codes) with
the game's frames. Limits: a frame over ``REALM_GAME_MAX_FRAME_BYTES`` closes
the socket (1009); over ``REALM_GAME_FRAMES_PER_S`` frames are dropped with a
``throttled`` error, and a connection throttled for ``REALM_GAME_FLOOD_GRACE_S``
in a row is closed (4008), as is one whose client does not read what it is
sent (``REALM_GAME_SEND_BUFFER`` frames or ``REALM_GAME_SEND_BUFFER_BYTES``
waiting). 4401: the session ended. 4408: nothing heard for
``REALM_GAME_HEARTBEAT_TIMEOUT_S``. 4409: another connection took the seat.
4404: the seat is gone (after a restart).

Room chat is the chat service's: a connection that joins a room opens a
``Watch`` (``actors.chat.client``) on the room's chat room as its user, sends
the last ``REALM_GAME_CHAT_HISTORY`` lines after the ``full`` frame, then every
new line as a ``chat`` frame, and posts its ``say`` frames there (in the order
sent, one at a time), answering a refusal with an ``error`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket
from ray.exceptions import ActorDiedError

from actors.auth.client import Principal, SessionVerifier
from actors.chat.client import MAX_PAGE, Post, Watch
from actors.game import protocol
from actors.game.client import GameClient
from actors.game.settings import GameSettings
from actors.game.view import chat_frame
from actors.runtime.clock import Clock
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.supervision import Handle, call
from apps.signin import verifier_of
from apps.streams import FrameRate, Outbox, StreamConnection, open_stream

log = logging.getLogger(__name__)

#: A client that floods (over its frame rate for ``flood_grace_s``) or does not read:
#: the issue's 4008, the same code as the shared skeleton's slow consumer.
CLOSE_FLOODING = 4008
CLOSE_NO_SEAT = 4404
CLOSE_REPLACED = 4409
#: A replica sends a room the inputs of its connections once per this many
#: seconds, in one call. An actor call costs about a millisecond of CPU
#: whatever it carries; sent as they came (one call per event-loop turn), 100
#: bots at 10 Hz made about a thousand calls a second. The room applies an
#: input only at its next tick (every 50 ms at 20 Hz); this adds at most 10 ms.
INPUT_BATCH_S = 0.01
#: A pull waits this long for frames before it is answered empty.
PULL_TIMEOUT_S = 1.0
#: Chat refusals a player sees as ``throttled``, as other frames over a rate.
THROTTLED = ("rate_limited", "slow_mode")
#: Lines one connection may have on their way to the chat service at once.
MAX_SAYING = 8
REASONS = {
    CLOSE_REPLACED: "another connection took this seat",
    CLOSE_NO_SEAT: "the seat is gone",
    CLOSE_FLOODING: "flooding",
}


class RoomLink:
    """One room, seen from one replica: its connections, one pull loop, batched inputs."""

    def __init__(self, hub: Hub, room: str, handle: Handle) -> None:
        self.hub, self.room, self.handle = hub, room, handle
        self.epoch = ""
        self.tick = 0
        self.conns: dict[str, Connection] = {}
        self.pending: list[tuple[str, str, dict[str, Any]]] = []
        self.task: asyncio.Task[None] | None = None
        self.resyncs = 0

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._pull_loop())

    def send_input(self, conn: Connection, frame: dict[str, Any]) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_later(INPUT_BATCH_S, self._flush)
        self.pending.append((conn.id, conn.user_id, frame))

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            self.hub.background(self._send(batch))

    async def _send(self, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
        try:
            await call(self.handle, "inputs", self.hub.replica, batch)
        except Exception as error:  # the room restarting: inputs of that moment are lost
            log.info("room %s: inputs not delivered (%r)", self.room, error)

    async def _pull_loop(self) -> None:
        try:
            await self._pull_while_linked()
        finally:
            # Only now does the link leave the hub: a pull in flight when its last
            # connection left may hold frames for one that joined since, which
            # must find this link (a new link's loop would share the mailbox and
            # the frames of one pull would be lost: a missed patch or close).
            if not self.conns and self.hub.links.get(self.room) is self:
                del self.hub.links[self.room]

    async def _pull_while_linked(self) -> None:
        while self.conns:
            try:
                out = await call(self.handle, "pull", self.hub.replica, self.epoch, PULL_TIMEOUT_S)
            except ActorDiedError:
                self._gone()
                return
            except Exception as error:
                log.info("room %s: pull failed (%r); again", self.room, error)
                await asyncio.sleep(0.2)
                continue
            self.tick = out["tick"]
            if out.get("reattach"):
                await self._reattach(out["epoch"])
                continue
            for conn_id, text, close in out["frames"]:
                conn = self.conns.get(conn_id)
                if conn is None:
                    continue
                if close:
                    self.unlink(conn)
                    conn.end(close, REASONS.get(close, ""))
                else:
                    conn.send_line(text)
            if out.get("disposed"):
                self._gone()
                return

    async def _reattach(self, epoch: str) -> None:
        self.epoch = epoch
        held = [(conn.id, conn.user_id) for conn in self.conns.values()]
        if not held:
            return
        try:
            answer = await call(self.handle, "reattach", self.hub.replica, held)
        except Exception as error:
            log.info("room %s: reattach failed (%r); again", self.room, error)
            self.epoch = ""
            await asyncio.sleep(0.2)
            return
        self.epoch = answer["epoch"]
        self.resyncs += 1
        for conn_id, result in answer["answers"].items():
            conn = self.conns.get(conn_id)
            if conn is None:
                continue
            if result.get("ok"):
                for text in result["frames"]:
                    conn.send_line(text)
            else:
                self.unlink(conn)
                code = CLOSE_REPLACED if result.get("code") == "replaced" else CLOSE_NO_SEAT
                conn.end(code, REASONS[code])

    def _gone(self) -> None:
        for conn in list(self.conns.values()):
            self.unlink(conn)
            conn.send({"t": "left", "reason": "disposed"})

    def unlink(self, conn: Connection) -> None:
        if self.conns.get(conn.id) is conn:
            del self.conns[conn.id]
        if conn.link is self:
            conn.link = None


class Hub:
    """A replica's rooms and connections."""

    def __init__(self, client: GameClient) -> None:
        self.client = client
        self.replica = uuid.uuid4().hex[:12]
        self.links: dict[str, RoomLink] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def join(self, conn: Connection, room: str) -> None:
        if conn.link is not None:
            await self.leave_link(conn)
        handle = await self.client.room(room)
        answer = await call(handle, "attach", self.replica, conn.id, conn.user_id)
        if not answer["ok"]:
            conn.send(protocol.error(answer["code"], answer["message"]))
            return
        link = self.links.get(room)
        if link is None:
            link = self.links[room] = RoomLink(self, room, handle)
            link.epoch = answer["epoch"]
        link.conns[conn.id] = conn
        link.tick = answer["tick"]
        conn.link = link
        for text in answer["frames"]:
            conn.send_line(text)
        link.start()
        if answer.get("chat"):
            await conn.open_chat(answer["chat"], answer["name"])

    async def leave_link(self, conn: Connection) -> None:
        await conn.close_chat()
        link = conn.link
        if link is None:
            return
        link.unlink(conn)
        with contextlib.suppress(Exception):
            await call(link.handle, "detach", self.replica, conn.id, conn.user_id)


class GameOutbox(Outbox):
    """A connection's send buffer: one frame a WebSocket message, as clients read them."""

    one_line_per_frame = True


class Connection(StreamConnection):
    """One player's WebSocket: the shared skeleton (``apps.streams``) with the game's
    frames, its frame rate (throttled, then closed 4008) and its room link."""

    where = "game WebSocket"
    slow_reason = "slow consumer: reconnect for a fresh state"

    def __init__(self, ws: WebSocket, hub: Hub, *, verifier: SessionVerifier, user: Principal,
                 config: GameSettings, clock: Clock | None = None) -> None:  # fmt: skip
        super().__init__(
            ws,
            verifier=verifier,
            user=user,
            signed_in=user,
            outbox=GameOutbox(config.send_buffer, config.send_buffer_bytes),
            keepalive_s=config.session_check_s,
            max_frame_chars=config.max_frame_bytes,
            heartbeat_timeout_s=config.heartbeat_timeout_s or None,
            clock=clock,
        )
        self.hub, self.config = hub, config
        self.user_id = user.user_id
        self.id = uuid.uuid4().hex[:16]
        self.link: RoomLink | None = None
        #: The room's chat room, and this connection's watch of it.
        self.chat_room = ""
        self.chat_watch: Watch | None = None
        self._saying: asyncio.Task[None] | None = None
        self._says_pending = 0
        self.rate = FrameRate(config.frames_per_s, grace_s=config.flood_grace_s, clock=self.clock)

    def __repr__(self) -> str:
        room = self.link.room if self.link is not None else ""
        return f"<game Connection {self.id} room={room!r} waiting={len(self.outbox)} {self.rate!r}>"

    async def release(self) -> None:
        await self.hub.leave_link(self)

    # --- room chat, through the chat service --------------------------------

    async def open_chat(self, chat_room: str, name: str) -> None:
        """Follow the room's chat room: its recent lines, then each new one."""
        await self.close_chat()
        chat = self.hub.client.chat
        try:
            watch, answer = await chat.open(
                chat_room, self.user_id, name, sink=self._chat_line, present=False, join=False
            )
        except Exception as error:  # not a member (banned from it), or chat away
            log.info("game chat %s not opened for %s: %r", chat_room, self.user_id, error)
            return
        self.chat_room, self.chat_watch = chat_room, watch
        seen = answer["visible_seq"]
        if self.config.chat_history:
            try:
                page = await chat.history(
                    chat_room, self.user_id, before=seen + 1,
                    limit=min(self.config.chat_history, MAX_PAGE),
                )  # fmt: skip
            except Exception as error:
                log.info("game chat %s: no history (%r)", chat_room, error)
            else:
                for line in page["messages"]:
                    if not line["deleted"]:
                        self.send_line(
                            chat_frame(line["seq"], line["at"], line["username"], line["text"])
                        )
        watch.begin(seen, [])

    def _chat_line(self, post: Post, text: str) -> None:
        if text:  # a message (rendered once for every connection of the room)
            self.send_line(text)

    async def close_chat(self) -> None:
        watch, self.chat_watch, self.chat_room = self.chat_watch, None, ""
        if watch is not None:
            with contextlib.suppress(Exception):
                await self.hub.client.chat.close_watch(watch)

    def say(self, text: str) -> None:
        """Post a line to the room's chat room, after this connection's previous one."""
        if not self.chat_room:
            self.send(protocol.error("chat_unavailable", "this room has no chat right now"))
            return
        if self._says_pending >= MAX_SAYING:
            self.send(protocol.error("throttled", "too many lines on their way: slow down"))
            return
        self._says_pending += 1
        previous = self._saying
        self._saying = asyncio.create_task(self._say(self.chat_room, text, previous))

    async def _say(self, chat_room: str, text: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await self.hub.client.chat.send(chat_room, self.user_id, text)
        except RealmError as error:
            code = "throttled" if error.code in THROTTLED else error.code
            self.send(protocol.error(code, error.message))
        except Exception as error:
            log.info("game chat %s: a line not sent (%r)", chat_room, error)
            self.send(protocol.error("chat_unavailable", "the line was not sent: say it again"))
        finally:
            self._says_pending -= 1

    def send_error(self, ref: str | None, error: RealmError) -> None:
        """A refusal from the shared skeleton (a binary frame) as the game's ``error``."""
        code = "bad_frame" if isinstance(error, InvalidInput) else error.code
        self.send(protocol.error(code, error.message))

    def admit(self) -> bool:
        """Whether a frame is within the connection's rate; one over it is dropped
        (with a ``throttled`` error at most once a second), and a connection still
        over it after ``flood_grace_s`` is closed (4008)."""
        if self.rate.take():
            return True
        if self.rate.flooding:
            self.end(CLOSE_FLOODING, "flooding: too many frames for too long")
        elif self.rate.warn():
            self.send(protocol.error("throttled", "too many frames: slow down"))
        return False

    async def handle_text(self, text: str) -> None:
        if self.admit():
            await self.handle(text)

    async def handle(self, data: str | bytes) -> None:
        try:
            frame = protocol.parse(data)
        except protocol.BadFrame as error:
            self.send(protocol.error("bad_frame", str(error), error.n))
            return
        kind = frame["t"]
        if kind == "ping":
            tick = self.link.tick if self.link is not None else 0
            self.send({"t": "pong", "c": frame["c"], "k": tick})
            return
        if kind == "join":
            try:
                await self.hub.join(self, frame["room"])
            except RealmError as error:
                if error.status == 404:
                    self.send(protocol.error("no_seat", "no such room, or no seat in it"))
                else:
                    self.send(protocol.error(error.code, error.to_dict()["message"]))
            except Exception:
                log.exception("game join failed")
                self.send(protocol.error("internal", "the room is not available; retry"))
            return
        if self.link is None:
            self.send(protocol.error("not_joined", "join a room first", frame.get("n")))
            return
        if kind == "say":
            self.say(frame["text"])
            return
        self.link.send_input(self, frame)
        if kind == "leave":
            link = self.link
            link.unlink(self)
            self.send({"t": "left", "reason": "left"})
            await self.close_chat()


def router(client: GameClient, config: GameSettings) -> APIRouter:
    routes = APIRouter()
    hub = Hub(client)

    @routes.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await open_stream(ws, "game:play")
        if signed_in is None:
            return
        user, _credential = signed_in
        connection = Connection(ws, hub, verifier=verifier_of(ws), user=user, config=config)
        await connection.run()

    routes.hub = hub  # type: ignore[attr-defined]
    return routes
