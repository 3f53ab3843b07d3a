"""The game's WebSocket, ``GET /game/ws?ticket=``: frames in docs/game.md, "Protocol".

A connection plays in one room at a time. Each replica holds one ``Hub``:
per room it has players in, one ``RoomLink`` keeps one ``pull`` outstanding on
the room's actor and hands the frames it answers to the connections (one
actor call per replica per patch, whatever the number of players), and sends
the connections' inputs in batches (one call per event-loop turn). When a
pull answers with a new epoch (the room's actor was restarted), the link
re-attaches every connection it holds, and each gets a full state marked
``"resync": true``.

Limits: a frame over ``REALM_GAME_MAX_FRAME_BYTES`` closes the socket (1009);
over ``REALM_GAME_FRAMES_PER_S`` frames are dropped with a ``throttled``
error, and a connection throttled for ``REALM_GAME_FLOOD_GRACE_S`` in a row is
closed (4008), as is one whose client does not read what it is sent
(``REALM_GAME_SEND_BUFFER`` frames waiting). 4401: the session ended. 4409:
another connection took the seat. 4404: the seat is gone (after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from ray.exceptions import ActorDiedError
from starlette.websockets import WebSocketState

from actors.auth.client import Principal, SessionVerifier
from actors.game import protocol
from actors.game.client import GameClient
from actors.game.settings import GameSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import RealmError
from actors.runtime.supervision import Handle, call
from apps.signin import sign_in_websocket, until_signed_out, verifier_of

log = logging.getLogger(__name__)

CLOSE_FLOODING = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NO_SEAT = 4404
CLOSE_REPLACED = 4409
CLOSE_TOO_BIG = 1009
CLOSE_TIMEOUT_S = 5.0
#: A pull waits this long for frames before it is answered empty.
PULL_TIMEOUT_S = 1.0
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
            asyncio.get_running_loop().call_soon(self._flush)
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

    async def leave_link(self, conn: Connection) -> None:
        link = conn.link
        if link is None:
            return
        link.unlink(conn)
        with contextlib.suppress(Exception):
            await call(link.handle, "detach", self.replica, conn.id, conn.user_id)


class Connection:
    """One player's WebSocket."""

    def __init__(self, ws: WebSocket, hub: Hub, *, verifier: SessionVerifier, user: Principal,
                 config: GameSettings, clock: Clock | None = None) -> None:  # fmt: skip
        self.ws, self.hub, self.verifier, self.user, self.config = ws, hub, verifier, user, config
        self.user_id = user.user_id
        self.clock = clock or SystemClock()
        self.id = uuid.uuid4().hex[:16]
        self.link: RoomLink | None = None
        self.outbox: deque[str] = deque()
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.close_code, self.close_reason = 1000, ""
        self.tokens = float(config.frames_per_s)
        self.refill_at = self.clock.now()
        self.throttled_since: float | None = None
        self.throttled_said = -1e9
        self.refused = 0

    def end(self, code: int, reason: str) -> None:
        if not self.ended.is_set():
            self.close_code, self.close_reason = code, reason
            self.ended.set()

    def send_line(self, text: str) -> None:
        if len(self.outbox) >= self.config.send_buffer:
            self.end(CLOSE_FLOODING, "slow consumer: reconnect for a fresh state")
            return
        self.outbox.append(text)
        self.ready.set()

    def send(self, frame: dict[str, Any]) -> None:
        from actors.game.view import encode

        self.send_line(encode(frame))

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._watch_session()),
            asyncio.create_task(self.ended.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await self.hub.leave_link(self)
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.ws.close(self.close_code, self.close_reason), CLOSE_TIMEOUT_S
                    )

    async def _write(self) -> None:
        while True:
            while not self.outbox:
                self.ready.clear()
                await self.ready.wait()
            await self.ws.send_text(self.outbox.popleft())

    async def _watch_session(self) -> None:
        await until_signed_out(self.verifier, self.user, self.config.session_check_s)
        self.end(CLOSE_UNAUTHORIZED, "the session ended")

    def _take(self) -> bool:
        """A token of the connection's frame rate; False once it is flooding."""
        now = self.clock.now()
        rate = self.config.frames_per_s
        self.tokens = min(rate, self.tokens + (now - self.refill_at) * rate)
        self.refill_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            if self.tokens >= 1:  # below the rate again (not just the token that came back)
                self.throttled_since = None
            return True
        if self.throttled_since is None:
            self.throttled_since = now
        elif now - self.throttled_since >= self.config.flood_grace_s:
            self.end(CLOSE_FLOODING, "flooding: too many frames for too long")
        self.refused += 1
        return False

    async def _read(self) -> None:
        limit = self.config.max_frame_bytes
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if len(data) > limit:
                self.end(CLOSE_TOO_BIG, f"a frame is at most {limit} bytes")
                return
            if not self._take():
                now = self.clock.now()
                if now - self.throttled_said >= 1.0:  # one error a second, not one per frame
                    self.throttled_said = now
                    self.send(protocol.error("throttled", "too many frames: slow down"))
                continue
            await self.handle(data)

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
        self.link.send_input(self, frame)
        if kind == "leave":
            link = self.link
            link.unlink(self)
            self.send({"t": "left", "reason": "left"})


def router(client: GameClient, config: GameSettings) -> APIRouter:
    routes = APIRouter()
    hub = Hub(client)

    @routes.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await sign_in_websocket(ws)
        if signed_in is None:
            return
        user, _credential = signed_in
        await ws.accept()
        if not user.allows("game:play"):
            await ws.close(CLOSE_FORBIDDEN, "this API key lacks the game:play scope")
            return
        connection = Connection(ws, hub, verifier=verifier_of(ws), user=user, config=config)
        await connection.run()

    routes.hub = hub  # type: ignore[attr-defined]
    return routes
