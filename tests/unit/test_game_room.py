"""A game room without Ray: seats, mailboxes, patches, recovery from snapshot + log."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from actors.game.room import CLOSE_REPLACED, Room
from actors.game.settings import GameSettings
from actors.ledger.model import check_id
from actors.runtime.clock import FakeClock
from actors.runtime.errors import NotFound
from actors.runtime.store import SQLiteStore


class FakeOutside:
    """A ledger that answers a repeated transfer id once, and the rest recorded."""

    def __init__(self) -> None:
        self.transfers: dict[str, tuple[str, int]] = {}
        self.progress: list[tuple[str, dict[str, Any]]] = []
        self.reports: list[int] = []
        self.closed_rooms: list[str] = []

    async def credit_gold(self, user: str, amount: int, transfer_id: str) -> int:
        self.transfers.setdefault(transfer_id, (user, amount))
        return sum(a for u, a in self.transfers.values() if u == user)

    async def save_progress(self, user: str, progress: list[dict[str, Any]]) -> None:
        self.progress.extend((user, p) for p in progress)

    async def report(self, room: str, players: int) -> None:
        self.reports.append(players)

    async def closed(self, room: str) -> None:
        self.closed_rooms.append(room)


CHAR = {"id": "c-1", "name": "ana", "class": "warrior", "xp": 0}
INFO = {
    "id": "g-test",
    "zone": "meadow",
    "mode": "world",
    "label": "",
    "private": False,
    "max_players": 2,
}


def make(
    store: SQLiteStore, clock: FakeClock, outside: FakeOutside | None = None, **settings: Any
) -> Room:
    config = GameSettings(**settings)
    return Room(
        config,
        dict(INFO),
        store,
        outside or FakeOutside(),
        clock=clock,
        on_failure=lambda error: None,
    )


def frames(room: Room, replica: str = "r1") -> list[dict[str, Any]]:
    box = room.boxes[replica]
    items, box.items = box.items, []
    return [orjson.loads(text) if text else {"close": close} for _, text, close in items]


async def seated(store: SQLiteStore, clock: FakeClock, **settings: Any) -> Room:
    room = make(store, clock, **settings)
    await room.open()
    await room.reserve("u1", CHAR)
    answer = room.attach("r1", "conn1", "u1")
    assert answer["ok"]
    return room


async def test_a_reserved_seat_joins_with_a_full_state_then_gets_patches(
    store: SQLiteStore, clock: FakeClock
) -> None:
    room = await seated(store, clock)
    answer = room.attach("r1", "conn1", "u1")
    full = orjson.loads(answer["frames"][0])
    assert full["t"] == "full" and full["room"]["id"] == "g-test" and not full["resync"]
    me = room.sim.players["u1"]
    assert full["me"] == me.id and any(e["i"] == me.id for e in full["ents"])
    room.inputs("r1", [("conn1", "u1", {"t": "move", "n": 1, "x": me.x + 1, "y": me.y})])
    room.tick_once()
    patches = [f for f in frames(room) if f.get("t") == "p"]
    assert patches and patches[-1]["n"] == 1 and patches[-1]["k"] == room.sim.tick


async def test_a_patch_goes_out_only_when_the_view_changed_else_a_keepalive_a_second(
    store: SQLiteStore, clock: FakeClock
) -> None:
    # A view of 1 tile around the spawn point: nothing wanders into it.
    room = await seated(store, clock, view_radius_tiles=1)
    me = room.sim.players["u1"]
    room.sim.monsters.clear()
    frames(room)
    sent = []
    for _ in range(45):  # over 2 s of ticks at 20 Hz with nothing new in view
        clock.advance(0.05)
        room.tick_once()
        sent += frames(room)
    # a keepalive a second, carrying the tick (and the last input applied), not 20
    assert sent == [{"t": "p", "k": f["k"], "n": 0} for f in sent] and len(sent) == 2
    assert 20 <= sent[1]["k"] - sent[0]["k"] <= 21  # a second apart (a tick of rounding)
    golds = {(g.x, g.y) for g in room.sim.golds.values()}
    step = next(
        (me.x + dx, me.y + dy)
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))
        if room.zone.walkable(me.x + dx, me.y + dy) and (me.x + dx, me.y + dy) not in golds
    )
    room.inputs("r1", [("conn1", "u1", {"t": "move", "n": 1, "x": step[0], "y": step[1]})])
    clock.advance(0.05)
    room.tick_once()
    (moved,) = frames(room)  # the step is in the very next patch
    assert moved["n"] == 1 and [u["i"] for u in moved["u"]] == [me.id]
    assert (me.x, me.y) == step


async def test_no_seat_without_a_reservation_and_the_room_has_a_size(
    store: SQLiteStore, clock: FakeClock
) -> None:
    room = make(store, clock)
    await room.open()
    assert room.attach("r1", "c", "stranger")["code"] == "no_seat"
    await room.reserve("u1", CHAR)
    await room.reserve("u2", CHAR)
    from actors.game.errors import RoomFull

    with pytest.raises(RoomFull):
        await room.reserve("u3", CHAR)
    await room.reserve("u1", CHAR)  # a refresh of one's own is fine


async def test_a_cheating_input_gets_an_error_frame(store: SQLiteStore, clock: FakeClock) -> None:
    room = await seated(store, clock)
    room.inputs("r1", [("conn1", "u1", {"t": "move", "n": 7, "x": 30, "y": 20})])
    room.tick_once()
    errors = [f for f in frames(room) if f.get("t") == "error"]
    assert errors == [{"t": "error", "code": "teleport", "message": errors[0]["message"], "n": 7}]
    assert room.stats()["cheats"] == 1


async def test_a_second_connection_replaces_the_first(store: SQLiteStore, clock: FakeClock) -> None:
    room = await seated(store, clock)
    frames(room)
    assert room.attach("r2", "conn2", "u1")["ok"]
    assert {"close": CLOSE_REPLACED} in frames(room, "r1")
    # the old connection's inputs are ignored
    me = room.sim.players["u1"]
    room.inputs("r1", [("conn1", "u1", {"t": "move", "n": 1, "x": me.x + 1, "y": me.y})])
    room.tick_once()
    assert me.last_n == 0


async def test_a_dropped_seat_is_kept_for_the_grace_then_released_and_the_room_disposed(
    store: SQLiteStore, clock: FakeClock
) -> None:
    room = await seated(store, clock, reconnect_grace_s=5, empty_room_grace_s=3)
    room.detach("r1", "conn1", "u1")
    clock.advance(4)
    room.housekeeping()
    assert "u1" in room.seats
    assert room.attach("r1", "conn9", "u1")["ok"]  # back within the grace: same seat
    room.detach("r1", "conn9", "u1")
    clock.advance(6)
    room.housekeeping()
    assert "u1" not in room.seats and "u1" not in room.sim.players
    assert not room.should_dispose()
    clock.advance(3)
    assert room.should_dispose()


class FakeChat:
    """The chat service as a room sees it: rooms made, members, calls recorded."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.members: dict[str, dict[str, str]] = {}
        self.closed: list[str] = []
        self.down = False

    async def chat_room(self, room: str) -> str:
        if self.down:
            raise ConnectionError("chat is away")
        self.made.append(room)
        chat = f"r-{len(self.made):024x}"
        self.members[chat] = {}
        return chat

    async def chat_admit(self, chat: str, room: str, user: str, name: str) -> None:
        if self.down:
            raise ConnectionError("chat is away")
        self.members[chat].setdefault(user, name)

    async def chat_leave(self, chat: str, room: str, user: str) -> None:
        if self.down:
            raise ConnectionError("chat is away")
        if user not in self.members[chat]:
            raise NotFound("not a member of the room")
        del self.members[chat][user]

    async def chat_close(self, chat: str, room: str) -> None:
        self.closed.append(chat)


async def test_room_chat_is_a_chat_room_whose_members_are_the_seats(
    store: SQLiteStore, clock: FakeClock
) -> None:
    chat = FakeChat()
    outside = FakeOutside()
    room = Room(GameSettings(), dict(INFO), store, outside, clock=clock,
                on_failure=lambda error: None, chat=chat)  # fmt: skip
    await room.open()
    await room.reserve("u1", CHAR)
    await room.reserve("u2", {**CHAR, "id": "c-2", "name": "bo"})
    await room.reserve("u1", CHAR)  # a repeat makes no second chat room
    (made,) = chat.made
    assert made == "g-test" and room.chat_room
    # Members under their characters' names, before the reservation was answered.
    assert chat.members[room.chat_room] == {"u1": "ana", "u2": "bo"}
    answer = room.attach("r1", "conn1", "u1")
    assert (answer["chat"], answer["name"]) == (room.chat_room, "ana")
    assert [orjson.loads(f)["t"] for f in answer["frames"]] == ["full"]  # no chat of its own
    room.inputs("r1", [("conn1", "u1", {"t": "say", "text": "hi"})])  # not the room's any more
    assert not [f for f in frames(room) if f.get("t") in ("chat", "error")]
    # The chat room is part of the room's state: a restarted room has the same one.
    room._flush()
    await room.journal.drain()
    again = Room(GameSettings(), dict(INFO), store, outside, clock=clock,
                 on_failure=lambda error: None, chat=chat)  # fmt: skip
    await again.open()
    assert again.chat_room == room.chat_room
    await again.reserve("u1", CHAR)
    assert len(chat.made) == 1
    # A seat given up, and the room disposed: out of the chat room, then it is deleted.
    again._leave(again.seats["u2"], "left")
    for task in list(again._tasks):
        await task
    assert chat.members[room.chat_room] == {"u1": "ana"}
    await again.dispose()
    assert chat.closed == [room.chat_room]


async def test_a_reservation_is_given_while_the_chat_service_is_away(
    store: SQLiteStore, clock: FakeClock
) -> None:
    chat = FakeChat()
    chat.down = True
    room = Room(GameSettings(), dict(INFO), store, FakeOutside(), clock=clock,
                on_failure=lambda error: None, chat=chat)  # fmt: skip
    await room.open()
    assert (await room.reserve("u1", CHAR))["room"] == "g-test"
    answer = room.attach("r1", "conn1", "u1")
    assert answer["ok"] and answer["chat"] == ""  # the connection says chat_unavailable
    chat.down = False
    await room.reserve("u2", {**CHAR, "id": "c-2", "name": "bo"})  # the next one makes it
    assert chat.members[room.chat_room] == {"u2": "bo"}


async def _settle(room: Room) -> None:
    """Run what the room started (chat calls, credits), and write its log."""
    for task in list(room._tasks):
        await task
    room._flush()
    await room.journal.drain()


async def test_a_seat_released_while_chat_or_the_room_was_down_still_leaves_the_chat(
    store: SQLiteStore, clock: FakeClock
) -> None:
    chat = FakeChat()

    def make_room() -> Room:
        return Room(GameSettings(), {**INFO, "max_players": 3}, store, FakeOutside(),
                    clock=clock, on_failure=lambda error: None, chat=chat)  # fmt: skip

    room = make_room()
    await room.open()
    for user, name in (("u1", "ana"), ("u2", "bo"), ("u3", "cy")):
        await room.reserve(user, {**CHAR, "id": f"c-{user}", "name": name})
    room.attach("r1", "conn1", "u1")
    room.attach("r1", "conn2", "u2")
    members = chat.members[room.chat_room]
    assert set(members) == {"u1", "u2", "u3"}
    # u2 leaves while the chat service is away: the leave is owed, not forgotten.
    chat.down = True
    room._leave(room.seats["u2"], "left")
    await _settle(room)
    assert "u2" in members and room.chat_leaves == {"u2"}
    # The room's actor dies here; its successor owes the same leave, and pays it once
    # the chat service answers again.
    again = make_room()
    await again.open()
    assert again.chat_leaves == {"u2"}
    assert again.reattach("r1", [("conn1", "u1")])["answers"]["conn1"]["ok"]
    again.housekeeping()
    await _settle(again)
    assert "u2" in members  # still away
    chat.down = False
    again.housekeeping()
    await _settle(again)
    assert set(members) == {"u1", "u3"} and again.chat_leaves == set()
    # u3 never connected: the reservation runs out, and the chat membership with it.
    clock.advance(GameSettings().seat_reservation_s + 1)
    again.housekeeping()
    await _settle(again)
    again.housekeeping()
    await _settle(again)
    assert set(members) == {"u1"} and "u3" not in again.seats
    # A leave owed to a player who takes a seat again is dropped: they stay.
    chat.down = True
    again._leave(again.seats["u1"], "left")
    await _settle(again)
    chat.down = False
    await again.reserve("u1", {**CHAR, "id": "c-u1", "name": "ana"})
    again.housekeeping()
    await _settle(again)
    assert set(members) == {"u1"} and again.chat_leaves == set()


async def _play(room: Room, ticks: int) -> None:
    me = room.sim.players["u1"]
    for i in range(ticks):
        if i % 5 == 0:
            step = 1 if (i // 25) % 2 == 0 else -1
            room.inputs(
                "r1", [("conn1", "u1", {"t": "move", "n": i + 1, "x": me.x + step, "y": me.y})]
            )
        room.tick_once()


async def test_a_restarted_room_resumes_from_snapshot_plus_log(
    store: SQLiteStore, clock: FakeClock
) -> None:
    outside = FakeOutside()
    room = make(store, clock, outside, snapshot_every_s=1.0)
    await room.open()
    await room.reserve("u1", CHAR)
    room.attach("r1", "conn1", "u1")
    for _ in range(3):
        await _play(room, 20)
        clock.advance(1.0)  # a snapshot every second of ticks
    await _play(room, 13)  # commands after the last snapshot: in the log only
    room.inputs("r1", [("conn1", "u1", {"t": "attack", "n": 999})])
    room._flush()
    await room.journal.drain()
    for task in list(room._tasks):
        await task
    expected = room.sim.to_data()
    snapshot = await store.read_snapshot(room.stream)
    assert snapshot is not None
    # the snapshot trimmed the log it covers: what stays is what came after it
    kept = [seq for seq, _ in await store.read(room.stream, after=0)]
    assert kept and min(kept) == snapshot[0] + 1, (snapshot[0], kept)
    # the actor is killed here; Ray starts it again on the same store
    again = make(store, clock, outside)
    await again.open()
    assert again.restored and again.epoch != room.epoch
    assert again.sim.to_data() == expected
    # the replica learns the new epoch from its pull and re-attaches its connection
    pulled = await again.pull("r1", room.epoch, 0.01)
    assert pulled["reattach"]
    answer = again.reattach("r1", [("conn1", "u1")])["answers"]["conn1"]
    assert answer["ok"] and orjson.loads(answer["frames"][0])["resync"] is True


async def test_gold_is_credited_once_even_when_a_replay_picks_it_up_again(
    store: SQLiteStore, clock: FakeClock
) -> None:
    outside = FakeOutside()
    room = make(store, clock, outside)
    await room.open()
    await room.reserve("u1", CHAR)
    room.attach("r1", "conn1", "u1")
    me = room.sim.players["u1"]
    pile = next(g for g in room.sim.golds.values() if (g.x, g.y) == (7, 4))
    me.x, me.y = 6, 4  # next to the pile near the spawn
    room.inputs("r1", [("conn1", "u1", {"t": "move", "n": 1, "x": 7, "y": 4})])
    room.tick_once()
    for task in list(room._tasks):
        await task
    assert list(outside.transfers.values()) == [("u1", pile.amount)]
    check_id(next(iter(outside.transfers)))  # a transfer id the ledger takes
    assert {"t": "gold", "balance": pile.amount, "delta": pile.amount} in frames(room)
    # replaying the same pickup repeats the same transfer id: still one credit
    room.pending_credits[next(iter(outside.transfers))] = ["u1", pile.amount]
    await room._credit(next(iter(outside.transfers)))
    assert len(outside.transfers) == 1
