"""The game over real HTTP and WebSocket through Serve: characters, rooms, seats,
patches, refusals, gold in the ledger, reconnection, and a room actor killed mid-game."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import ray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from actors.game import events
from actors.game.characters import SHARD_PREFIX as CHARACTERS
from actors.game.characters import CharacterShardActor
from actors.game.gold import WORLD_ACCOUNT, account_of
from actors.game.settings import GameSettings
from actors.ledger.client import LedgerClient
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.scheduler.client import SchedulerClient
from tests.conftest import until
from tests.integration.conftest import error_code, service_client, sign_up

SERVICE = "game"


def ws_url(base_url: str, ticket: str) -> str:
    return f"{base_url.replace('http://', 'ws://')}/game/ws?ticket={ticket}"


@dataclass
class Gamer:
    """A signed-in player: HTTP client, character, and a WebSocket reader."""

    base_url: str
    headers: dict[str, str]
    http: httpx.AsyncClient
    character: dict[str, Any] = field(default_factory=dict)
    ws: ClientConnection | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    closed: int | None = None
    me: str = ""
    n: int = 0

    async def connect(self) -> ClientConnection:
        async with service_client(self.base_url, "auth", self.headers) as auth:
            ticket = (await auth.post("/ticket")).json()["ticket"]
        self.ws = await connect(ws_url(self.base_url, ticket), max_size=None)
        self.frames, self.closed = [], None
        self.reader = asyncio.create_task(self._read(self.ws))
        return self.ws

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                self.frames.append(orjson.loads(text))
        except ConnectionClosed:
            pass
        self.closed = ws.close_code

    async def send(self, frame: dict[str, Any] | str) -> None:
        assert self.ws is not None
        await self.ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def join(self, room: str, *, resync: bool = False) -> dict[str, Any]:
        start = len(self.frames)
        await self.send({"t": "join", "room": room})
        full = await self.wait(lambda f: f["t"] == "full", start=start)
        self.me = full["me"]
        return full

    async def wait(self, test: Any, *, start: int = 0, within_s: float = 15.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((f for f in self.frames[start:] if test(f)), None)

        return await until(found, within_s=within_s, what="a frame")  # type: ignore[no-any-return]

    def position(self, entity: str) -> tuple[int, int]:
        """Where this client last saw ``entity`` (from its full state and patches)."""
        x = y = -1
        for frame in self.frames:
            ents = frame.get("ents", []) if frame["t"] == "full" else []
            for e in [*ents, *frame.get("a", []), *frame.get("u", [])]:
                if e["i"] == entity:
                    x, y = e.get("x", x), e.get("y", y)
        return x, y

    async def step(self, x: int, y: int) -> int:
        self.n += 1
        await self.send({"t": "move", "n": self.n, "x": x, "y": y})
        return self.n

    async def walk_to(self, x: int, y: int) -> None:
        """Step by step (one tile per step time) until at (x, y)."""
        for _ in range(40):
            px, py = self.position(self.me)
            if (px, py) == (x, y):
                return
            nx, ny = px + (x > px) - (x < px), py + (y > py) - (y < py)
            start = len(self.frames)
            n = await self.step(nx, ny)
            await self.wait(
                lambda f, n=n: f.get("n", 0) >= n and f["t"] in ("p", "full"), start=start
            )
        errors = [f for f in self.frames if f["t"] == "error"][-3:]
        raise AssertionError(f"did not get to ({x}, {y}) from {self.position(self.me)}: {errors}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader


@contextlib.asynccontextmanager
async def gamer(base_url: str, cls: str = "warrior") -> AsyncIterator[Gamer]:
    headers = await sign_up(base_url)
    async with service_client(base_url, SERVICE, headers) as http:
        made = await http.post("/characters", json={"name": f"hero-{cls[:3]}", "class": cls})
        assert made.status_code == 201, made.text
        player = Gamer(base_url, headers, http, made.json())
        try:
            yield player
        finally:
            await player.close()


async def seat(player: Gamer, room: str | None = None, **body: Any) -> dict[str, Any]:
    if room is None:
        answer = await player.http.post(
            "/play", json={"character": player.character["id"], "zone": "meadow"}
        )
    else:
        answer = await player.http.post(
            f"/rooms/{room}/join", json={"character": player.character["id"], **body}
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_refusals_over_http(base_url: str, http_settings: Settings) -> None:
    async with service_client(base_url, SERVICE) as anonymous:
        assert (await anonymous.get("/characters")).status_code == 401
    async with gamer(base_url) as ana, gamer(base_url) as bo:
        bad = await ana.http.post("/characters", json={"name": "x", "class": "bard"})
        assert bad.status_code == 422
        extra = await ana.http.post("/characters", json={"name": "ok", "class": "mage", "hp": 9})
        assert extra.status_code == 422
        for i in range(4):
            made = await ana.http.post("/characters", json={"name": f"alt{i}", "class": "mage"})
            assert made.status_code == 201
        full = await ana.http.post("/characters", json={"name": "alt9", "class": "mage"})
        assert full.status_code == 403 and error_code(full) == "limit_reached"
        # another user's character, an unknown room, a private room without its code: 404
        theirs = await bo.http.get(f"/characters/{ana.character['id']}")
        assert theirs.status_code == 404
        unknown = await ana.http.post("/rooms/g-0000/join", json={"character": "c-x"})
        assert unknown.status_code == 404 and error_code(unknown) == "game_room_not_found"
        with pytest.raises(ValueError):  # and no actor was started for it
            ray.get_actor("game-room-g-0000", namespace=http_settings.namespace)
        made = await ana.http.post(
            "/rooms", json={"zone": "arena", "private": True, "label": "duel"}
        )
        assert made.status_code == 201 and made.json()["code"]
        room, code = made.json()["id"], made.json()["code"]
        assert (await bo.http.get(f"/rooms/{room}")).status_code == 404
        no_code = await bo.http.post(f"/rooms/{room}/join", json={"character": bo.character["id"]})
        assert no_code.status_code == 404
        wrong = await bo.http.post(
            f"/rooms/{room}/join", json={"character": bo.character["id"], "code": "nope"}
        )
        assert wrong.status_code == 404
        assert (await seat(bo, room, code=code))["room"] == room
        listed = (await bo.http.get("/rooms", params={"label": "duel"})).json()["rooms"]
        assert room not in [r["id"] for r in listed]  # private rooms are not listed
        nowhere = await ana.http.post("/rooms", json={"zone": "mars"})
        assert nowhere.status_code == 404 and error_code(nowhere) == "zone_not_found"
        assert (await ana.http.get("/maps/meadow")).json()["width"] == 40


async def test_two_players_see_each_other_move_and_bad_frames_are_refused(
    base_url: str,
) -> None:
    async with gamer(base_url) as ana, gamer(base_url, "archer") as bo:
        room = (await seat(ana))["room"]
        assert (await seat(bo))["room"] == room  # quick join fills the same room
        await ana.connect()
        await bo.connect()
        await bo.send({"t": "move", "n": 1, "x": 1, "y": 1})
        assert (await bo.wait(lambda f: f["t"] == "error"))["code"] == "not_joined"
        full_a = await ana.join(room)
        await bo.join(room)
        assert full_a["room"]["id"] == room and full_a["hz"] == 20
        # ana moves; bo sees it in a patch
        x, y = ana.position(ana.me)
        target = (x + 1, y) if (x + 1, y) != (7, 4) else (x, y + 1)
        await ana.step(*target)
        await until(lambda: bo.position(ana.me) == target, within_s=15, what="bo sees ana move")
        # refusals: each an error frame, and the connection stays open
        start = len(ana.frames)
        await ana.send("not json")
        await ana.send({"t": "fly"})
        await ana.send({"t": "move", "n": 50, "x": 30, "y": 25})  # a teleport
        await ana.send({"t": "ping", "c": 1.5})
        pong = await ana.wait(lambda f: f["t"] == "pong", start=start)
        assert pong["c"] == 1.5 and pong["k"] > 0
        await ana.wait(lambda f: f.get("code") == "teleport", start=start)
        codes = [f.get("code") for f in ana.frames[start:] if f["t"] == "error"]
        assert codes[:2] == ["bad_frame", "bad_frame"] and "teleport" in codes
        assert ana.position(ana.me) == target  # the teleport changed nothing
        # chat over the same socket, through the chat service: the line is in the game
        # room's chat room, which its players may read over /chat too
        start = len(ana.frames)  # (the quick-join room may have lines of earlier tests)
        await bo.send({"t": "say", "text": "hello"})
        line = await ana.wait(lambda f: f["t"] == "chat", start=start)
        assert line["text"] == "hello" and line["from"] == bo.character["name"]
        async with service_client(base_url, "chat", bo.headers) as chat:
            (mine,) = (await chat.get("/rooms")).json()["rooms"]
            kept = (await chat.get(f"/rooms/{mine['id']}/messages")).json()["messages"]
            assert (line["seq"], "hello") in [(m["seq"], m["text"]) for m in kept]
        stats = (await ana.http.get(f"/rooms/{room}/stats")).json()
        assert stats["refused"].get("teleport") == 1 and stats["tick_ms"]["p99"] >= 0


async def user_id(base_url: str, headers: dict[str, str]) -> str:
    async with service_client(base_url, "auth", headers) as auth:
        return str((await auth.get("/me")).json()["id"])


async def test_a_rooms_owner_mutes_a_player_in_its_chat(base_url: str) -> None:
    async with gamer(base_url) as ana, gamer(base_url, "archer") as bo:
        made = await ana.http.post("/rooms", json={"zone": "arena", "private": True})
        room, code = made.json()["id"], made.json()["code"]
        await seat(ana, room)
        await seat(bo, room, code=code)
        await ana.connect()
        await bo.connect()
        await ana.join(room)
        await bo.join(room)
        mutes = f"/rooms/{room}/chat/mutes"
        ana_id, bo_id = [await user_id(base_url, p.headers) for p in (ana, bo)]
        # only the room's owner moderates; bad input changes nothing
        not_owner = await bo.http.post(mutes, json={"user_id": ana_id})
        assert not_owner.status_code == 403, not_owner.text
        for body in ({"user_id": bo_id, "duration_s": 0}, {"user_id": ""}, {"duration_s": 5}):
            assert (await ana.http.post(mutes, json=body)).status_code == 422, body
        unknown = await ana.http.post("/rooms/g-0000/chat/mutes", json={"user_id": bo_id})
        assert unknown.status_code == 404 and error_code(unknown) == "game_room_not_found"
        start = len(ana.frames)
        await bo.send({"t": "say", "text": "before"})
        assert (await ana.wait(lambda f: f["t"] == "chat", start=start))["text"] == "before"
        muted = await ana.http.post(mutes, json={"user_id": bo_id, "duration_s": 600})
        assert muted.status_code == 200, muted.text
        start = len(bo.frames)
        await bo.send({"t": "say", "text": "hush"})
        assert (await bo.wait(lambda f: f["t"] == "error", start=start))["code"] == "muted"
        assert (await bo.http.delete(f"{mutes}/{bo_id}")).status_code == 403
        assert (await ana.http.delete(f"{mutes}/{bo_id}")).status_code == 204
        start = len(ana.frames)
        await bo.send({"t": "say", "text": "after"})
        assert (await ana.wait(lambda f: f["t"] == "chat", start=start))["text"] == "after"
        said = [f["text"] for f in ana.frames if f["t"] == "chat"]
        assert "hush" not in said


async def test_loot_is_credited_in_the_ledger_and_trades_conserve_gold(
    base_url: str, http_settings: Settings
) -> None:
    async with gamer(base_url) as ana, gamer(base_url) as bo:
        # A room of its own: in the quick-join room another test (or an earlier run
        # of this one) may have taken the pile, which comes back only 20 s later.
        made = await ana.http.post("/rooms", json={"zone": "meadow", "label": "loot"})
        assert made.status_code == 201, made.text
        room = (await seat(ana, made.json()["id"]))["room"]
        await ana.connect()
        await ana.join(room)
        await ana.walk_to(7, 4)  # the gold pile next to the spawn points
        gold = await ana.wait(lambda f: f["t"] == "gold")
        assert gold["delta"] == 5 and gold["balance"] >= 5
        balance = (await ana.http.get("/gold")).json()
        assert balance["balance"] == gold["balance"]
        assert balance["account"] == account_of(balance["account"].removeprefix("game.gold."))
        before = balance["balance"]
        traded = await ana.http.post(
            "/trades", json={"id": "t1", "to_character": bo.character["id"], "gold": 2}
        )
        assert traded.status_code == 200, traded.text
        assert traded.json() == {"id": "t1", "gold": 2, "fee": 1, "balance": before - 3}
        again = await ana.http.post(
            "/trades", json={"id": "t1", "to_character": bo.character["id"], "gold": 2}
        )
        assert again.json()["balance"] == before - 3  # a retry pays once
        assert (await bo.http.get("/gold")).json()["balance"] == 2
        too_much = await ana.http.post(
            "/trades", json={"id": "t2", "to_character": bo.character["id"], "gold": 10_000}
        )
        assert (
            too_much.status_code in (409, 422)
            and (await ana.http.get("/gold")).json()["balance"] == before - 3
        )
        # money is conserved: the world's account is minus every player's
        ledger = LedgerClient(http_settings)
        world = await ledger.get_account(WORLD_ACCOUNT)
        totals = await ledger.totals()
        assert world["debits_posted"] >= 5
        assert totals["total"]["debits_posted"] == totals["total"]["credits_posted"]
        ana_now = (await ana.http.get("/gold")).json()["balance"]
        bo_now = (await bo.http.get("/gold")).json()["balance"]
        assert ana_now + bo_now + traded.json()["fee"] == before  # nothing made or lost


async def test_reconnect_same_seat_and_a_second_connection_replaces_the_first(
    base_url: str,
) -> None:
    async with gamer(base_url) as ana:
        room = (await seat(ana))["room"]
        await ana.connect()
        first = (await ana.join(room))["me"]
        await ana.close()
        await ana.connect()
        assert (await ana.join(room))["me"] == first  # the seat was held
        old = ana.ws
        old_reader = ana.reader
        await ana.connect()  # a second tab
        assert (await ana.join(room))["me"] == first
        assert old is not None and old_reader is not None
        await asyncio.wait_for(old_reader, 10)
        assert old.close_code == 4409


async def test_flooding_is_throttled_then_closed_and_big_frames_too(base_url: str) -> None:
    async with gamer(base_url) as ana:
        room = (await seat(ana))["room"]
        ws = await ana.connect()
        await ana.join(room)
        # Flood until closed: the server must see frames over its rate for the flood
        # grace on its own clock (a fixed count may be read in one burst when the
        # server runs behind the client).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        with contextlib.suppress(ConnectionClosed):
            while loop.time() < deadline:
                await ws.send('{"t":"ping","c":1}')
                await asyncio.sleep(0.002)
        await asyncio.wait_for(ana.reader, 10)  # type: ignore[arg-type]
        assert ana.closed == 4008
        assert any(f.get("code") == "throttled" for f in ana.frames)
        ws = await ana.connect()
        await ws.send('{"t":"say","text":"' + "x" * 5_000 + '"}')
        await asyncio.wait_for(ana.reader, 10)  # type: ignore[arg-type]
        assert ana.closed == 1009


async def test_a_killed_room_resyncs_its_players_who_keep_playing(
    base_url: str, http_settings: Settings
) -> None:
    async with gamer(base_url) as ana, gamer(base_url) as bo:
        room = (await seat(ana))["room"]
        await seat(bo)
        await ana.connect()
        await bo.connect()
        await ana.join(room)
        await bo.join(room)
        x, y = ana.position(ana.me)
        await ana.step(x, y + 1)
        await ana.wait(lambda f: f.get("n", 0) >= 1 and f["t"] == "p")
        await ana.send({"t": "say", "text": "before the crash"})
        await bo.wait(lambda f: f.get("text") == "before the crash")  # durable: it came back
        await asyncio.sleep(1.2)  # a snapshot with the step in it
        handle = ray.get_actor(f"game-room-{room}", namespace=http_settings.namespace)
        pid_before = (await ana.http.get(f"/rooms/{room}/stats")).json()["pid"]
        start_a, start_b = len(ana.frames), len(bo.frames)
        ray.kill(handle, no_restart=False)
        full_a = await ana.wait(
            lambda f: f["t"] == "full" and f["resync"], start=start_a, within_s=30
        )
        await bo.wait(lambda f: f["t"] == "full" and f["resync"], start=start_b, within_s=30)
        assert ana.closed is None and bo.closed is None  # no error, no close: one resync
        assert full_a["me"] == ana.me
        mine = next(e for e in full_a["ents"] if e["i"] == ana.me)
        assert (mine["x"], mine["y"]) == (x, y + 1)  # the step survived the crash
        stats = (await ana.http.get(f"/rooms/{room}/stats")).json()
        assert stats["pid"] != pid_before and stats["restored"]
        # Chat said before the kill and after it: a player joining anew gets both.
        await bo.send({"t": "say", "text": "after the crash"})
        await ana.wait(lambda f: f["t"] == "chat" and f["text"] == "after the crash")
        await ana.close()
        await ana.connect()
        await ana.join(room)
        await ana.wait(lambda f: f.get("text") == "after the crash")
        said = [f["text"] for f in ana.frames if f["t"] == "chat"]
        assert said[-2:] == ["before the crash", "after the crash"]
        # and the game goes on
        n = await ana.step(x, y)
        await bo.wait(
            lambda f: (
                f["t"] == "p" and any(e["i"] == ana.me and e.get("y") == y for e in f.get("u", []))
            )
        )
        assert n == 2


async def test_items_are_used_worn_dropped_and_kept_by_the_character(
    base_url: str, http_settings: Settings
) -> None:
    async with gamer(base_url) as ana:
        async with service_client(base_url, "auth", ana.headers) as auth:
            user = (await auth.get("/me")).json()["id"]
        character = ana.character["id"]
        # What a room writes when the character picks up a potion and a sword.
        shards = Shards(
            CharacterShardActor, CHARACTERS, GameSettings.of(http_settings).character_shards,
            http_settings,
        )  # fmt: skip
        progress = {"character": character, "level": 1, "xp": 0, "kills": 0, "deaths": 0}
        bag = {"items": ["potion", "sword"], "weapon": "", "armour": "", "inv": 1}
        assert await shards.owner(user).call("progress", user, [{**progress, **bag}]) == 1
        assert (await ana.http.get("/items")).json()["sword"]["slot"] == "weapon"
        made = await ana.http.post("/rooms", json={"zone": "meadow", "label": "items"})
        room = (await seat(ana, made.json()["id"]))["room"]
        await ana.connect()
        full = await ana.join(room)
        assert full["you"]["bag"] == ["potion", "sword"] and full["you"]["wpn"] == ""
        damage = full["you"]["dmg"]
        await ana.send({"t": "equip", "n": 1, "item": "sword"})
        worn = await ana.wait(lambda f: f["t"] == "p" and f.get("you", {}).get("wpn") == "sword")
        assert worn["you"]["dmg"] > damage and worn["you"]["bag"] == ["potion"]
        # Bad ones: each an error frame, nothing changed, the connection open.
        start = len(ana.frames)
        await ana.send({"t": "use", "n": 2, "item": "sword"})  # worn, not carried
        await ana.send({"t": "equip", "n": 3, "item": "potion"})  # not wearable
        await ana.send({"t": "unequip", "n": 4, "slot": "armour"})  # nothing worn there
        await ana.send({"t": "use", "n": 5})  # no item: a bad frame
        errors = [
            await ana.wait(lambda f, n=n: f["t"] == "error" and f.get("n") == n, start=start)
            for n in (2, 3, 4, 5)
        ]
        assert [e["code"] for e in errors] == ["no_item", "not_usable", "no_item", "bad_frame"]
        # Dropped: it lies on the player's tile for anyone to pick up.
        await ana.send({"t": "drop", "n": 6, "item": "potion"})
        dropped = await ana.wait(
            lambda f: f["t"] == "p" and any(e["k"] == "i" for e in f.get("a", [])), start=start
        )
        (potion,) = [e for e in dropped["a"] if e["k"] == "i"]
        assert potion["c"] == "potion" and (potion["x"], potion["y"]) == ana.position(ana.me)
        # The character keeps what the room wrote: the sword worn, the bag empty.
        await ana.send({"t": "leave"})
        await ana.wait(lambda f: f["t"] == "left", start=start)

        async def kept() -> dict[str, Any] | None:
            got = (await ana.http.get(f"/characters/{character}")).json()
            return got if got["weapon"] == "sword" else None

        got = await until(kept, within_s=15, what="the inventory saved")
        assert got["items"] == [] and got["armour"] == ""


async def test_a_match_forms_from_tickets_and_its_players_get_their_seats(
    base_url: str,
) -> None:
    region = f"test-{uuid.uuid4().hex[:8]}"  # no other ticket matches these two
    async with gamer(base_url) as ana, gamer(base_url, "archer") as bo:
        tickets = []
        for player in (ana, bo):
            made = await player.http.post(
                "/matchmaker/tickets",
                json={
                    "character": player.character["id"],
                    "mode": "duel",
                    "region": region,
                    "query": {"mode": "duel", "region": region},
                },
            )
            assert made.status_code == 201 and made.json()["state"] == "waiting", made.text
            tickets.append(made.json()["id"])
        # another user's ticket is not theirs to see
        assert (await bo.http.get(f"/matchmaker/tickets/{tickets[0]}")).status_code == 404

        async def state(player: Gamer, ticket: str) -> dict[str, Any]:
            answer = await player.http.get(f"/matchmaker/tickets/{ticket}")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        def matched(shown: dict[str, Any]) -> bool:
            return shown["state"] == "matched"

        mine = await until(lambda: state(ana, tickets[0]), matched, what="ana's ticket matched")
        theirs = await until(lambda: state(bo, tickets[1]), matched, what="bo's ticket matched")
        room = mine["room"]
        assert theirs["room"] == room and mine["seat"] != theirs["seat"]
        shown = (await ana.http.get(f"/rooms/{room}")).json()
        assert shown["zone"] == "arena" and shown["private"] and shown["mode"] == "duel"
        # the reservations are real: both take their seats without asking for one
        await ana.connect()
        await bo.connect()
        full_a, full_b = await ana.join(room), await bo.join(room)
        assert full_a["room"]["id"] == full_b["room"]["id"] == room
        assert full_a["me"] != full_b["me"]


async def test_a_world_event_fired_by_the_scheduler_spawns_its_boss_in_the_room(
    base_url: str, http_settings: Settings
) -> None:
    async with gamer(base_url) as ana:
        made = await ana.http.post("/rooms", json={"zone": "caves", "label": "world-event"})
        assert made.status_code == 201, made.text
        room = made.json()["id"]
        await seat(ana, room)  # a seated room stays open
        actor = ray.get_actor(f"game-room-{room}", namespace=http_settings.namespace)

        async def bosses() -> list[str]:
            found: list[str] = await actor.__ray_call__.remote(
                lambda self: [m.kind for m in self.room.sim.monsters.values() if m.boss]
            )
            return found

        assert await bosses() == []
        # The caves' dragon, as the game schedules it each day, but every second: the
        # scheduler fires it on the game's topic, the rooms list hands it to the room.
        dragon = next(s for s in events.schedules() if s["target"]["payload"]["zone"] == "caves")
        spec = {k: v for k, v in dragon.items() if k not in ("cron", "timezone")}
        spec |= {"name": f"test-{uuid.uuid4().hex[:8]}", "every_s": 1}
        scheduler = SchedulerClient(http_settings)
        made_schedule = await scheduler.create(spec, owner=events.WORLD_OWNER)
        try:
            assert await until(bosses, within_s=30, what="the dragon in the room") == ["dragon"]
        finally:
            await scheduler.delete(made_schedule["id"], owner=events.WORLD_OWNER)
        stats = (await ana.http.get(f"/rooms/{room}/stats")).json()
        assert stats["restored"] is False  # it came as a logged command, not a restart
