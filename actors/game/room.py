"""A room: one zone instance, one ``GameRoom`` actor, the authoritative tick loop.

The room owns a ``Sim`` and the seats of its players. Everything that changes
the world is a *command* (a seat reserved or released, a player joining or
leaving, an input, a boss), applied between two ticks the moment it arrives
and logged, per tick, as one record ``["c", tick, commands]`` in the room's
stream in the store. Every ``snapshot_every_s`` the room writes its whole state
as a snapshot. A restarted room loads the snapshot and replays the commands
after it at the ticks they were applied at: the simulation is deterministic,
so it is the same world again, up to the last tick that had a command (the
ticks after it, monsters wandering, are ephemeral and simply go on from there).
A reservation is acknowledged only once its record is in the store.

Connections live in the WebSocket replicas. Each replica keeps one ``pull``
outstanding per room it has players in; the room answers it with every frame
for that replica's connections since the last pull (one call per replica per
patch, whatever its number of players). A replica sends its players' frames
in batches (``inputs``). After a restart the room has a new ``epoch``; the
replicas see it on their next pull and ``reattach`` their connections, which
get a full state marked ``"resync": true``.

Room chat is not the room's: each game room has a private room in the chat
service (``chat_room``, made on the first reservation and kept in the room's
state), owned by the game in the room's name (``chat_owner``). A player becomes
a member, under their character's name, before their reservation is answered,
and stops being one when the seat goes. The WebSocket replicas post players'
``say`` frames there and follow it with the chat service's own watches; the room
only answers ``attach`` with the chat room's id. So a line is durable (in the
chat service's journal) before anyone sees it, and a room restart touches none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.game import protocol, world
from actors.game.settings import GameSettings
from actors.game.sim import Sim
from actors.game.view import Snapshot, View, encode
from actors.runtime import codec
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import RealmError
from actors.runtime.journal import Journal, crash_process
from actors.runtime.store import Store

log = logging.getLogger(__name__)

ROOM_PREFIX = "game-room-"
#: Close codes the room asks a replica to close a connection with.
CLOSE_REPLACED = 4409
CLOSE_NO_SEAT = 4404
#: Frames a replica's mailbox holds before the replica is taken for gone.
MAX_MAILBOX = 50_000
#: A replica that has not pulled for this long is gone: its players dropped.
REPLICA_GONE_S = 10.0
#: Ticks of timing kept for ``stats``.
TIMING_SAMPLES = 2_000
#: The chat owner of a game room's chat room (a principal of the game's, one per room:
#: each owns one chat room, so the chat service's per-owner quota is never in the way,
#: and the rooms spread over the chat shards).
CHAT_OWNER_PREFIX = "svc-game-"
#: How long a reservation waits for the chat service (the seat is given anyway).
CHAT_TIMEOUT_S = 5.0


def stream_of(room: str) -> str:
    return f"{ROOM_PREFIX}{room}"


def chat_owner(room: str) -> str:
    return f"{CHAT_OWNER_PREFIX}{room}"


def seat_id(room: str, user: str) -> str:
    """The opaque seat id shown to a player (stable for one user in one room)."""
    return hashlib.blake2s(f"{room}:{user}".encode(), digest_size=6).hexdigest()


class Outside(Protocol):
    """What a room needs from other actors and services."""

    async def credit_gold(self, user: str, amount: int, transfer_id: str) -> int: ...
    async def save_progress(self, user: str, progress: list[dict[str, Any]]) -> None: ...
    async def report(self, room: str, players: int) -> None: ...
    async def closed(self, room: str) -> None: ...


class RoomChat(Protocol):
    """The chat service, as a room needs it (``actors.game.outside.RayOutside``)."""

    async def chat_room(self, room: str) -> str:
        """The id of a new chat room for game room ``room`` (the same for a repeat)."""

    async def chat_admit(self, chat: str, room: str, user: str, name: str) -> None:
        """Make ``user`` a member of ``chat`` under ``name`` (already one: nothing)."""

    async def chat_leave(self, chat: str, room: str, user: str) -> None: ...
    async def chat_close(self, chat: str, room: str) -> None:
        """Delete ``chat`` (the game room is disposed)."""


@dataclass
class Seat:
    user: str
    character: dict[str, Any]
    #: Wall-clock time by which a reserved seat must be taken (0: taken).
    reserved_until: float
    replica: str = ""
    conn: str = ""
    #: Monotonic time the player lost its connection (0: connected or never seen).
    dropped_at: float = 0.0
    view: View | None = None
    last_sent: float = 0.0
    saved: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mailbox:
    items: list[tuple[str, str, int]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    last_pull: float = 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class Room:
    """A room's state and behaviour; ``GameRoomActor`` runs it as an actor."""

    def __init__(
        self,
        config: GameSettings,
        info: dict[str, Any],
        store: Store,
        outside: Outside,
        *,
        clock: Clock | None = None,
        on_failure: Callable[[BaseException], None] = crash_process,
        chat: RoomChat | None = None,
    ) -> None:
        self.config = config
        self.info = info
        self.id: str = info["id"]
        self.zone = world.load(info["zone"])
        self.store = store
        self.outside = outside
        #: Where the room's chat is (None: a room without chat, as in the benchmark).
        self.chat = chat
        self.clock = clock or SystemClock()
        self.stream = stream_of(self.id)
        self.journal = Journal(store, self.stream, on_failure=on_failure)
        self.epoch = secrets.token_hex(6)
        self.sim = Sim(
            self.zone, tick_hz=config.tick_hz, seed=_seed(self.id), input_queue=config.input_queue
        )
        self.seats: dict[str, Seat] = {}
        self.boxes: dict[str, Mailbox] = {}
        self.buffer: list[list[Any]] = []
        self.pending_credits: dict[str, list[Any]] = {}  #: transfer id -> [user, amount]
        #: The room's chat room in the chat service ("": not made yet).
        self.chat_room = ""
        self._chat_lock = asyncio.Lock()
        #: Players whose seat went and who are still to leave the chat room: durable
        #: (a release adds them, as part of the logged command), retried until the chat
        #: service answers, so a seat released while the room's actor or the chat
        #: service was down does not leave its player in the room's chat.
        self.chat_leaves: set[str] = set()
        #: A player's chat leave in flight: a new reservation waits for it to end.
        self._chat_leaving: dict[str, asyncio.Task[None]] = {}
        self.events: list[dict[str, Any]] = []
        self.timing: deque[tuple[int, float, float]] = deque(maxlen=TIMING_SAMPLES)
        self.patch_bytes = 0
        self.patches = 0
        self.ticks_run = 0
        self.last_patch_ms = -(10**9)
        self.last_snapshot = 0.0
        self.last_housekeeping = 0.0
        self.empty_since: float | None = None
        self.reported = -1
        self.disposed = asyncio.Event()
        self.restored = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None

    # --- recovery -----------------------------------------------------------

    async def open(self) -> None:
        """Load the last snapshot and replay the log after it."""
        snapshot = await self.store.read_snapshot(self.stream)
        head = 0
        if snapshot is not None:
            head, data = snapshot
            self._restore(codec.decode(data))
            self.restored = True
        for seq, data in await self.store.read(self.stream, after=head):
            kind, after_tick, commands = codec.decode(data)
            assert kind == "c"
            while self.sim.tick < after_tick:
                self.sim.step()
                self._keep_credits()
            for command in commands:
                self._apply(command)
            head = seq
            self.restored = True
        self._keep_credits()
        self.sim.drain()
        self.journal.start_at(max(head, await self.store.head(self.stream)))
        now = self.clock.now()
        for seat in self.seats.values():
            if not seat.reserved_until:
                seat.dropped_at = now  # its connection must come back within the grace
        self.last_snapshot = self.last_housekeeping = now
        for transfer in list(self.pending_credits):
            self._spawn(self._credit(transfer), name=transfer)

    def _restore(self, state: dict[str, Any]) -> None:
        self.sim = Sim.from_data(self.zone, state["sim"], input_queue=self.config.input_queue)
        self.seats = {
            user: Seat(user, character, reserved_until)
            for user, character, reserved_until in state["seats"]
        }
        self.pending_credits = {tid: list(rest) for tid, *rest in state["credits"]}
        self.chat_room = str(state.get("chat_room", ""))
        self.chat_leaves = set(state.get("chat_leaves", []))

    def _state(self) -> dict[str, Any]:
        return {
            "sim": self.sim.to_data(),
            "seats": [[s.user, s.character, s.reserved_until] for s in self.seats.values()],
            "credits": [[tid, *rest] for tid, rest in self.pending_credits.items()],
            "chat_room": self.chat_room,
            "chat_leaves": sorted(self.chat_leaves),
        }

    def _keep_credits(self) -> None:
        """Gold a replayed tick picked up: credited again (the ledger answers a repeat
        of a transfer id with its first answer)."""
        for effect in self.sim.effects:
            if effect[0] == "gold":
                _, user, amount, key = effect
                self.pending_credits[self._transfer_id(key)] = [user, amount]
        self.sim.effects = [e for e in self.sim.effects if e[0] != "gold"]

    def _transfer_id(self, key: str) -> str:
        return f"game.loot.{self.id}.{key}"

    # --- commands -----------------------------------------------------------

    def _apply(self, command: list[Any]) -> None:
        op = command[0]
        if op == "in":
            self.sim.queue_input(command[1], command[2])
        elif op == "join":
            seat = self.seats.get(command[1])
            if seat is not None:
                seat.reserved_until = 0.0
                self.sim.add_player(command[1], seat.character)
        elif op == "reserve":
            _, user, character, until = command
            seat = self.seats.get(user)
            if seat is None:
                self.seats[user] = Seat(user, character, until)
            elif seat.reserved_until:
                seat.character, seat.reserved_until = character, until
        elif op == "release":
            self.seats.pop(command[1], None)
            self.sim.remove_player(command[1])
            if self.chat_room:
                self.chat_leaves.add(command[1])
        elif op == "chat_leave":  # admitted to the chat, then no seat after all
            self.chat_leaves.add(command[1])
        elif op == "chat_settled":  # left the chat, or seated again and staying
            self.chat_leaves.discard(command[1])
        elif op == "boss":
            self.sim.spawn_boss(command[1], command[2], command[3])
        elif op == "chat":
            self.chat_room = command[1]
        else:
            raise ValueError(f"unknown room command {op!r}")

    def _command(self, command: list[Any]) -> None:
        self._apply(command)
        self.buffer.append(command)

    def _flush(self) -> asyncio.Future[int] | None:
        if not self.buffer:
            return None
        record = codec.encode(["c", self.sim.tick, self.buffer])
        self.buffer = []
        return self.journal.append(record)[1]

    # --- seats --------------------------------------------------------------

    def _taken(self) -> int:
        return len(self.seats)

    async def reserve(self, user: str, character: dict[str, Any]) -> dict[str, Any]:
        """Reserve a seat for ``user``'s character (or refresh theirs); durable once answered."""
        seat = self.seats.get(user)
        if seat is None and self._taken() >= int(self.info["max_players"]):
            from actors.game.errors import RoomFull

            raise RoomFull(room=self.id, max_players=self.info["max_players"])
        await self._chat_admit(user, str(character["name"]))
        seat = self.seats.get(user)
        if seat is None and self._taken() >= int(self.info["max_players"]):
            from actors.game.errors import RoomFull

            self._command(["chat_leave", user])  # the last seat went meanwhile
            self._start_chat_leave(user)
            raise RoomFull(room=self.id, max_players=self.info["max_players"])
        until = self.clock.time() + self.config.seat_reservation_s
        if seat is None or seat.reserved_until:
            self._command(["reserve", user, character, until])
        committed = self._flush()
        if committed is not None:
            await committed
        self.empty_since = None
        return {
            "room": self.id,
            "seat": seat_id(self.id, user),
            "zone": self.zone.zone,
            "expires_in_s": self.config.seat_reservation_s,
        }

    async def _chat_admit(self, user: str, name: str) -> None:
        """``user`` a member of the room's chat room (made first if there is none).
        The chat service being away costs the player the chat, not the seat."""
        if self.chat is None:
            return
        leaving = self._chat_leaving.get(user)
        if leaving is not None:
            await asyncio.wait([leaving])
        if user in self.chat_leaves:  # a leave still owed: seated again, they stay
            self._command(["chat_settled", user])
        try:
            if not self.chat_room:
                async with self._chat_lock:
                    if not self.chat_room:
                        made = await asyncio.wait_for(self.chat.chat_room(self.id), CHAT_TIMEOUT_S)
                        self._command(["chat", made])  # logged with the reservation
            await asyncio.wait_for(
                self.chat.chat_admit(self.chat_room, self.id, user, name), CHAT_TIMEOUT_S
            )
        except Exception as error:
            log.warning("room %s: %s not let into the room's chat (%r)", self.id, user, error)

    def room_shown(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "zone": self.zone.zone,
            "mode": self.info.get("mode", "world"),
            "label": self.info.get("label", ""),
            "private": bool(self.info.get("private")),
        }

    def _seat_open(self, user: str) -> Seat | None:
        seat = self.seats.get(user)
        if seat is None:
            return None
        if seat.reserved_until and seat.reserved_until < self.clock.time():
            self._command(["release", user])
            return None
        return seat

    def attach(self, replica: str, conn: str, user: str, *, resync: bool = False) -> dict[str, Any]:
        """Connect ``conn`` (on ``replica``) to ``user``'s seat: its full state, or a refusal."""
        seat = self._seat_open(user)
        if seat is None:
            return {
                "ok": False,
                "epoch": self.epoch,
                "code": "no_seat",
                "message": "no seat here: reserve one first (POST /game/rooms/{id}/join)",
            }
        if seat.conn and (seat.conn, seat.replica) != (conn, replica):
            self._post_close(seat.replica, seat.conn, CLOSE_REPLACED)
        if user not in self.sim.players:
            self._command(["join", user])
        seat.replica, seat.conn, seat.dropped_at = replica, conn, 0.0
        self.boxes.setdefault(replica, Mailbox(last_pull=self.clock.now()))
        seat.view = View(user, self.config.view_radius_tiles)
        full = seat.view.full(self._snapshot(), self.room_shown(), resync=resync)
        seat.last_sent = self.clock.now()
        self.empty_since = None
        return {
            "ok": True,
            "epoch": self.epoch,
            "frames": [encode(full)],
            "seat": seat_id(self.id, user),
            "tick": self.sim.tick,
            "chat": self.chat_room,
            "name": str(seat.character["name"]),
        }

    def reattach(self, replica: str, conns: list[tuple[str, str]]) -> dict[str, Any]:
        """After a restart: connections a replica still holds, back on their seats."""
        answers = {}
        for conn, user in conns:
            seat = self.seats.get(user)
            if seat is not None and seat.conn and seat.conn != conn:
                answers[conn] = {"ok": False, "code": "replaced"}
                continue
            answers[conn] = self.attach(replica, conn, user, resync=True)
        return {"epoch": self.epoch, "answers": answers}

    def detach(self, replica: str, conn: str, user: str) -> None:
        """The connection closed: the seat is held for the reconnection grace."""
        seat = self.seats.get(user)
        if seat is not None and (seat.replica, seat.conn) == (replica, conn):
            seat.conn, seat.replica, seat.view = "", "", None
            seat.dropped_at = self.clock.now()

    def inputs(self, replica: str, frames: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Frames from a replica's connections (already parsed and checked)."""
        for conn, user, frame in frames:
            seat = self.seats.get(user)
            if seat is None or (seat.replica, seat.conn) != (replica, conn):
                continue  # a connection that was replaced or has left
            kind = frame["t"]
            if kind in protocol.INPUTS:
                self._command(["in", user, frame])
            elif kind == "resync" and seat.view is not None:
                self._post(
                    seat, encode(seat.view.full(self._snapshot(), self.room_shown(), resync=False))
                )
            elif kind == "leave":
                self._leave(seat, "left")

    def _leave(self, seat: Seat, reason: str) -> None:
        self._save_progress([seat.user])
        if seat.conn:
            self._post(seat, encode({"t": "left", "reason": reason}))
        self._command(["release", seat.user])
        self._start_chat_leave(seat.user)

    def _start_chat_leave(self, user: str) -> None:
        """Take ``user`` out of the room's chat (an owed leave, ``chat_leaves``), unless
        that is under way already."""
        if self.chat is None or not self.chat_room or user in self._chat_leaving:
            return
        leaving = asyncio.ensure_future(self._chat_leave(user))
        self._chat_leaving[user] = leaving
        self._tasks.add(leaving)
        leaving.add_done_callback(self._tasks.discard)

    async def _chat_leave(self, user: str) -> None:
        assert self.chat is not None
        try:
            await asyncio.wait_for(
                self.chat.chat_leave(self.chat_room, self.id, user), CHAT_TIMEOUT_S
            )
        except Exception as error:
            # A refusal (not a member any more, the chat room gone) leaves nothing to
            # undo; the chat service away or unreachable: housekeeping retries.
            if not isinstance(error, RealmError) or error.is_fault:
                log.info("room %s: %s's chat leave waits (%r)", self.id, user, error)
                return
        finally:
            if self._chat_leaving.get(user) is asyncio.current_task():
                del self._chat_leaving[user]
        if user in self.chat_leaves and user not in self.seats:
            self._command(["chat_settled", user])

    # --- mailboxes ----------------------------------------------------------

    def _post(self, seat: Seat, text: str) -> None:
        if seat.conn:
            self._deliver(seat.replica, seat.conn, text, 0)

    def _post_close(self, replica: str, conn: str, code: int) -> None:
        self._deliver(replica, conn, "", code)

    def _deliver(self, replica: str, conn: str, text: str, close: int) -> None:
        box = self.boxes.get(replica)
        if box is None:
            return
        box.items.append((conn, text, close))
        box.arrived.set()
        if len(box.items) > MAX_MAILBOX:
            self._replica_gone(replica)

    def _replica_gone(self, replica: str) -> None:
        self.boxes.pop(replica, None)
        now = self.clock.now()
        for seat in self.seats.values():
            if seat.replica == replica:
                seat.conn, seat.replica, seat.view, seat.dropped_at = "", "", None, now

    async def pull(self, replica: str, epoch: str, timeout_s: float) -> dict[str, Any]:
        """Frames for ``replica``'s connections, waiting up to ``timeout_s`` for some.
        A replica that knows another epoch is told to ``reattach``."""
        if epoch != self.epoch:
            return {"epoch": self.epoch, "reattach": True, "frames": [], "tick": self.sim.tick}
        box = self.boxes.setdefault(replica, Mailbox())
        box.last_pull = self.clock.now()
        if not box.items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.arrived.wait(), timeout_s)
        items, box.items = box.items, []
        box.arrived.clear()
        box.last_pull = self.clock.now()
        return {
            "epoch": self.epoch,
            "frames": items,
            "tick": self.sim.tick,
            "disposed": self.disposed.is_set(),
        }

    # --- the tick -----------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.sim, self.config.view_radius_tiles)

    def tick_once(self) -> None:
        """One tick: log the commands since the last, step, send what is due."""
        self._flush()
        self.sim.step()
        self.ticks_run += 1
        events, refusals, effects = self.sim.drain()
        self.events.extend(events)
        for refusal in refusals:
            seat = self.seats.get(refusal.seat)
            if seat is not None and seat.conn:
                frame: dict[str, Any] = {
                    "t": "error",
                    "code": refusal.code,
                    "message": refusal.message,
                }
                if refusal.n is not None:
                    frame["n"] = refusal.n
                self._post(seat, encode(frame))
        for effect in effects:
            if effect[0] == "gold":
                _, user, amount, key = effect
                transfer = self._transfer_id(key)
                self.pending_credits[transfer] = [user, amount]
                self._spawn(self._credit(transfer), name=transfer)
            elif effect[0] == "items":
                self._save_progress([effect[1]])
            elif effect[0] == "portal":
                seat = self.seats.get(effect[1])
                if seat is not None:
                    self._post(seat, encode({"t": "portal", "zone": effect[2]}))
        now_ms = self.sim.ms()
        if now_ms - self.last_patch_ms >= self.config.patch_ms:
            self.last_patch_ms = now_ms
            self._patches()
        now = self.clock.now()
        if now - self.last_snapshot >= self.config.snapshot_every_s:
            self.last_snapshot = now
            self.take_snapshot()
        if now - self.last_housekeeping >= 1.0:
            self.last_housekeeping = now
            self.housekeeping()

    def _patches(self) -> None:
        events, self.events = self.events, []
        connected = [seat for seat in self.seats.values() if seat.conn and seat.view]
        if not connected:
            return
        snap = self._snapshot()
        now = self.clock.now()
        for seat in connected:
            assert seat.view is not None
            if seat.user not in self.sim.players:
                continue
            patch = seat.view.patch(snap, events, heartbeat=now - seat.last_sent >= 1.0)
            if patch is None:
                continue
            text = encode(patch)
            self.patch_bytes += len(text)
            self.patches += 1
            seat.last_sent = now
            self._post(seat, text)

    def take_snapshot(self) -> None:
        self._flush()
        self._save_progress(list(self.sim.players))
        seq = self.journal.assigned
        data = codec.encode(self._state())

        async def write() -> None:
            try:
                await self.journal.synced(seq)
                await self.store.write_snapshot(self.stream, seq, data)
            except Exception as error:
                log.warning("room %s: snapshot at %d not written (%r)", self.id, seq, error)

        self._spawn(write())

    def housekeeping(self) -> None:
        now, wall = self.clock.now(), self.clock.time()
        for replica, box in list(self.boxes.items()):
            if now - box.last_pull > REPLICA_GONE_S:
                self._replica_gone(replica)
        for seat in list(self.seats.values()):
            if seat.reserved_until and seat.reserved_until < wall and not seat.conn:
                self._command(["release", seat.user])
            elif seat.dropped_at and now - seat.dropped_at >= self.config.reconnect_grace_s:
                self._leave(seat, "dropped")
        for transfer in list(self.pending_credits):
            if not any(t.get_name() == transfer for t in self._tasks):
                self._spawn(self._credit(transfer), name=transfer)
        for user in list(self.chat_leaves):
            self._start_chat_leave(user)
        if self.seats:
            self.empty_since = None
        elif self.empty_since is None:
            self.empty_since = now
        if len(self.seats) != self.reported:
            self.reported = len(self.seats)
            self._spawn(self.outside.report(self.id, len(self.seats)))

    def should_dispose(self) -> bool:
        return (
            self.empty_since is not None
            and self.clock.now() - self.empty_since >= self.config.empty_room_grace_s
        )

    def _save_progress(self, users: list[str]) -> None:
        for user in users:
            seat = self.seats.get(user)
            if seat is None or user not in self.sim.players:
                continue
            progress = self.sim.progress(user)
            if progress != seat.saved:
                seat.saved = progress
                self._spawn(self.outside.save_progress(user, [progress]))

    async def _credit(self, transfer: str) -> None:
        found = self.pending_credits.get(transfer)
        if found is None:
            return
        user, amount = found
        try:
            balance = await self.outside.credit_gold(user, amount, transfer)
        except RealmError as error:
            if error.is_fault:
                log.warning("room %s: gold credit %s not done yet (%r)", self.id, transfer, error)
            else:  # refused for good: retrying would not change the answer
                log.error("room %s: gold credit %s refused (%r)", self.id, transfer, error)
                self.pending_credits.pop(transfer, None)
            return
        except Exception as error:
            log.warning("room %s: gold credit %s not done yet (%r)", self.id, transfer, error)
            return
        self.pending_credits.pop(transfer, None)
        seat = self.seats.get(user)
        if seat is not None:
            self._post(seat, encode({"t": "gold", "balance": balance, "delta": amount}))

    def world_event(self, kind: str, monster: str, x: int, y: int) -> bool:
        if kind != "boss":
            return False
        self._command(["boss", monster, x, y])
        return True

    def _spawn(self, work: Awaitable[Any], *, name: str | None = None) -> None:
        task = asyncio.ensure_future(work)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the loop -----------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self.run())

    async def run(self) -> None:
        """Tick at ``tick_hz`` until disposed; a late tick is measured, and if the
        room falls far behind it skips ahead rather than bursting."""
        period = 1.0 / self.config.tick_hz
        next_at = self.clock.now()
        while not self.disposed.is_set():
            next_at += period
            await self.clock.sleep(next_at - self.clock.now())
            started = self.clock.now()
            late = started - next_at
            try:
                self.tick_once()
            except Exception:
                log.exception("room %s: tick %d failed", self.id, self.sim.tick)
                raise
            self.timing.append((self.sim.tick, (self.clock.now() - started) * 1000, late * 1000))
            if late > 5 * period:
                next_at = self.clock.now()
            if self.should_dispose():
                await self.dispose()

    async def dispose(self) -> None:
        """Close the room for good: off the list, its stream deleted."""
        self.disposed.set()
        for box in self.boxes.values():
            box.arrived.set()
        await self.outside.closed(self.id)
        if self.chat is not None and self.chat_room:
            try:
                await self.chat.chat_close(self.chat_room, self.id)
            except Exception as error:
                log.warning("room %s: chat %s not deleted (%r)", self.id, self.chat_room, error)
        await self.journal.drain()
        await self.store.delete_stream(self.stream)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._tasks):
            task.cancel()

    def stats(self, since_tick: int = 0, samples: bool = False) -> dict[str, Any]:
        """Tick timing over the kept samples after ``since_tick``: ``tick_ms`` is a
        tick's work, ``late_ms`` how long after its fixed-schedule time it started."""
        window = [(t, d, late) for t, d, late in self.timing if t > since_tick]
        durations = [d for _, d, _ in window]
        lateness = [max(0.0, late) for _, _, late in window]
        refused: dict[str, int] = {}
        for player in self.sim.players.values():
            for code, count in player.refused.items():
                refused[code] = refused.get(code, 0) + count
        shown: dict[str, Any] = {
            "room": self.id,
            "epoch": self.epoch,
            "tick": self.sim.tick,
            "tick_hz": self.config.tick_hz,
            "ticks": self.ticks_run,
            "tick_ms": {
                "p50": percentile(durations, 0.5),
                "p99": percentile(durations, 0.99),
                "max": round(max(durations, default=0.0), 3),
            },
            "late_ms": {
                "p50": percentile(lateness, 0.5),
                "p99": percentile(lateness, 0.99),
                "max": round(max(lateness, default=0.0), 3),
            },
            "samples": len(window),
            "players": len(self.sim.players),
            "seats": len(self.seats),
            "entities": len(self.sim.entities()),
            "patches": self.patches,
            "patch_bytes": self.patch_bytes,
            "refused": refused,
            "cheats": self.sim.cheats,
            "pid": os.getpid(),
            "restored": self.restored,
        }
        if samples:
            shown["tick_samples"] = [[t, round(d, 3), round(late, 3)] for t, d, late in window]
        return shown

    def reset_stats(self) -> None:
        self.timing.clear()
        self.patch_bytes = self.patches = 0


def _seed(room: str) -> int:
    return int.from_bytes(hashlib.blake2s(room.encode(), digest_size=8).digest(), "big")


# --- the actor ----------------------------------------------------------------


class _GameRoomProcess:
    """A ``Room`` as a Ray actor: recovers in ``__init__``, ticks in the background."""

    async def __init__(self, settings: Any, info: dict[str, Any]) -> None:  # type: ignore[misc]
        from actors.game.outside import RayOutside
        from actors.runtime.store import open_store
        from actors.runtime.supervision import report_start, run_start_hooks

        name = stream_of(info["id"])
        run_start_hooks(settings, "game", name)
        store = open_store(settings, name)
        outside = RayOutside(settings)
        self.room = Room(GameSettings.of(settings), info, store, outside, chat=outside)
        await self.room.open()
        self.restarts = await report_start(store, name)
        self.room.start()
        self._ender = asyncio.create_task(self._end_when_disposed())

    async def _end_when_disposed(self) -> None:
        import ray

        await self.room.disposed.wait()
        await asyncio.sleep(0.5)  # let the replicas' pulls learn it
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def ping(self) -> dict[str, Any]:
        return {"epoch": self.room.epoch, "tick": self.room.sim.tick, "restarts": self.restarts}

    async def reserve(self, user: str, character: dict[str, Any]) -> dict[str, Any]:
        return await self.room.reserve(user, character)

    async def has_seat(self, user: str) -> bool:
        return user in self.room.seats

    async def chat_room(self) -> str:
        """The id of the room's chat room in the chat service ("": none made yet)."""
        return self.room.chat_room

    async def release(self, user: str) -> bool:
        seat = self.room.seats.get(user)
        if seat is None:
            return False
        self.room._leave(seat, "left")
        committed = self.room._flush()
        if committed is not None:
            await committed
        return True

    async def attach(self, replica: str, conn: str, user: str) -> dict[str, Any]:
        return self.room.attach(replica, conn, user)

    async def reattach(self, replica: str, conns: list[tuple[str, str]]) -> dict[str, Any]:
        return self.room.reattach(replica, conns)

    async def detach(self, replica: str, conn: str, user: str) -> None:
        self.room.detach(replica, conn, user)

    async def inputs(self, replica: str, frames: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.room.inputs(replica, frames)

    async def pull(self, replica: str, epoch: str, timeout_s: float) -> dict[str, Any]:
        return await self.room.pull(replica, epoch, timeout_s)

    async def world_event(self, kind: str, monster: str, x: int, y: int) -> bool:
        return self.room.world_event(kind, monster, x, y)

    async def stats(
        self, reset: bool = False, since_tick: int = 0, samples: bool = False
    ) -> dict[str, Any]:
        import ray

        stats = self.room.stats(since_tick, samples)
        stats["node_id"] = ray.get_runtime_context().get_node_id()
        stats["restarts"] = self.restarts
        if reset:
            self.room.reset_stats()
        return stats


def _room_actor_class() -> Any:
    from actors.runtime.supervision import Restart, remote_actor

    # Permanent: a crashed room comes back (from snapshot + log) and the calls in
    # flight are retried on it (reservations are idempotent per user, a repeated
    # pull or input is harmless). Rooms spread over the nodes.
    return remote_actor(
        _GameRoomProcess,
        restart=Restart.PERMANENT,
        scheduling_strategy="SPREAD",
        max_concurrency=10_000,
    )


GameRoomActor = _room_actor_class()
