"""``apps.game`` without Ray: scopes, strict bodies, 404s, the browser client's files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from actors.auth.client import Principal
from actors.game.errors import RoomNotFound
from actors.runtime.settings import Settings
from apps.game import make_app
from apps.game.routes import STATIC_DIR
from tests.unit.fronts import calling_as, principal

CHAR = {
    "id": "c-1",
    "name": "ana",
    "class": "warrior",
    "level": 1,
    "xp": 0,
    "kills": 0,
    "deaths": 0,
    "created_at": 1.0,
}


class FakeGame:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def create_character(self, user: str, name: str, cls: str, *, key: Any) -> dict:
        self.calls.append(("create_character", (user, name, cls)))
        return {**CHAR, "name": name, "class": cls}

    async def join(self, user: str, room: str, character: str, *, code: Any) -> dict:
        raise RoomNotFound(room=room)

    async def play(self, user: str, character: str, zone: str) -> dict[str, Any]:
        self.calls.append(("play", (user, character, zone)))
        return {"room": "g-1", "seat": "abc", "zone": zone, "expires_in_s": 15.0}

    async def balance(self, user: str) -> int:
        return 7


@pytest.fixture
async def front() -> AsyncIterator[tuple[httpx.AsyncClient, FakeGame, list[Principal]]]:
    fake = FakeGame()
    caller = [principal()]
    app = make_app(fake, Settings())  # type: ignore[arg-type]
    async with calling_as(app, caller) as http:
        yield http, fake, caller


async def test_characters_take_a_strict_body_with_class(front: Any) -> None:
    http, fake, _ = front
    made = await http.post("/characters", json={"name": "ana", "class": "mage"})
    assert made.status_code == 201 and made.json()["class"] == "mage"
    assert fake.calls == [("create_character", ("ada", "ana", "mage"))]
    for bad in (
        {"name": "ana", "class": "bard"},
        {"name": "a", "class": "mage"},
        {"name": "ana", "class": "mage", "hp": 99},
        {"name": 5, "class": "mage"},
    ):
        assert (await http.post("/characters", json=bad)).status_code == 422
    assert len(fake.calls) == 1  # bad input changes nothing


async def test_an_api_key_needs_the_route_s_scope(front: Any) -> None:
    http, fake, caller = front
    caller[0] = principal(scopes={"game:read"})
    refused = await http.post("/play", json={"character": "c-1", "zone": "meadow"})
    assert refused.status_code == 403 and not fake.calls
    assert (await http.get("/gold")).json() == {"account": "game.gold.ada", "balance": 7}
    caller[0] = principal(scopes={"game:play"})
    assert (
        await http.post("/play", json={"character": "c-1", "zone": "meadow"})
    ).status_code == 200


async def test_a_room_that_is_not_there_is_a_404_in_the_envelope(front: Any) -> None:
    http, _, _ = front
    answer = await http.post("/rooms/g-nope/join", json={"character": "c-1"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "game_room_not_found"
    assert (await http.post("/rooms/bad id!/join", json={"character": "c"})).status_code == 422


async def test_the_maps_and_classes_are_served(front: Any) -> None:
    http, _, _ = front
    zones = (await http.get("/maps")).json()["zones"]
    assert {z["zone"] for z in zones} >= {"meadow", "caves", "arena"}
    assert (await http.get("/maps/meadow")).json()["tiles"][0] == "#" * 40
    assert (await http.get("/maps/nowhere")).status_code == 404
    assert (await http.get("/classes")).json()["warrior"]["range"] == 1


@pytest.mark.skipif(not (STATIC_DIR / "index.html").is_file(), reason="no browser client files")
async def test_the_browser_client_is_served_with_a_strict_policy(front: Any) -> None:
    http, _, _ = front
    page = await http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_a_connection_over_its_rate_is_throttled_then_closed_as_flooding() -> None:
    from actors.game.settings import GameSettings
    from actors.runtime.clock import FakeClock
    from apps.game.ws import CLOSE_FLOODING, Connection

    clock = FakeClock()
    config = GameSettings(frames_per_s=10, flood_grace_s=2)
    conn = Connection(None, None, verifier=None, user=principal(), config=config, clock=clock)  # type: ignore[arg-type]
    assert all(conn.admit() for _ in range(10))  # the burst
    assert not conn.admit()  # over the rate: dropped, and the client told once
    for _ in range(15):  # 500 frames a second for 1.5 s: some pass as tokens come back
        clock.advance(0.1)
        [conn.admit() for _ in range(50)]
    assert not conn.ended.is_set()
    throttled = [orjson.loads(line) for line in conn.outbox.lines]
    assert {f["code"] for f in throttled} == {"throttled"}
    assert 1 <= len(throttled) <= 3  # at most one a second, not one per dropped frame
    for _ in range(6):
        clock.advance(0.1)
        [conn.admit() for _ in range(50)]
    assert conn.ended.is_set() and conn.close_code == CLOSE_FLOODING
    calm = Connection(None, None, verifier=None, user=principal(), config=config, clock=clock)  # type: ignore[arg-type]
    for _ in range(100):  # at the rate, for 10 s: never closed
        clock.advance(0.1)
        assert calm.admit()
    assert not calm.ended.is_set() and not calm.outbox.lines


async def test_a_game_connection_sends_one_frame_a_message_and_closes_a_slow_client() -> None:
    from actors.game.settings import GameSettings
    from apps.game.ws import CLOSE_FLOODING, Connection

    config = GameSettings(send_buffer=8, send_buffer_bytes=65_536)
    conn = Connection(None, None, verifier=None, user=principal(), config=config)  # type: ignore[arg-type]
    conn.send({"t": "pong", "c": 1, "k": 2})
    conn.send({"t": "pong", "c": 2, "k": 2})
    assert orjson.loads(await conn.outbox.next_frame())["c"] == 1  # one JSON object each
    assert orjson.loads(await conn.outbox.next_frame())["c"] == 2
    for i in range(9):
        conn.send({"t": "pong", "c": i, "k": 2})
    assert conn.ended.is_set() and conn.close_code == CLOSE_FLOODING
    big = Connection(None, None, verifier=None, user=principal(), config=config)  # type: ignore[arg-type]
    big.send_line("x" * 40_000)
    big.send_line("x" * 40_000)  # over the bytes, under the count
    assert big.ended.is_set() and big.close_code == CLOSE_FLOODING


async def test_a_binary_frame_is_a_bad_frame_in_the_game_s_own_error() -> None:
    from actors.game.settings import GameSettings
    from actors.runtime.errors import InvalidInput
    from apps.game.ws import Connection

    conn = Connection(None, None, verifier=None, user=principal(), config=GameSettings())  # type: ignore[arg-type]
    conn.send_error(None, InvalidInput("frames are JSON text"))
    assert orjson.loads(conn.outbox.lines[0]) == {
        "t": "error",
        "code": "bad_frame",
        "message": "frames are JSON text",
    }


class _FakeWatch:
    def __init__(self) -> None:
        self.begun: int | None = None

    def begin(self, cursor: int, history: list[Any]) -> None:
        self.begun = cursor


class _FakeChat:
    """The chat client as a game connection uses it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.refuse: dict[str, Exception] = {}
        self.sinks: list[Any] = []
        self.closed: list[Any] = []

    async def open(self, room: str, user: str, name: str, **kw: Any) -> tuple[Any, dict]:
        assert kw["join"] is False and kw["present"] is False
        self.sinks.append(kw["sink"])
        return _FakeWatch(), {"visible_seq": 7}

    async def history(self, room: str, user: str, *, before: int, limit: int) -> dict:
        assert before == 8 and limit == 50
        line = {"seq": 5, "at": 1.5, "username": "bo", "text": "old", "deleted": False}
        gone = {**line, "seq": 6, "text": "", "deleted": True}
        return {"messages": [line, gone]}

    async def send(self, room: str, user: str, text: str) -> dict:
        await asyncio.sleep(0.01 if text == "first" else 0)  # the first is the slowest
        if text in self.refuse:
            raise self.refuse[text]
        self.sent.append((room, user, text))
        return {"seq": len(self.sent)}

    async def close_watch(self, watch: Any) -> None:
        self.closed.append(watch)


async def test_a_connection_reads_and_posts_room_chat_through_the_chat_service() -> None:
    from actors.game.settings import GameSettings
    from actors.game.view import chat_frame
    from actors.runtime.errors import RateLimited, RealmError
    from apps.game.ws import Connection

    chat = _FakeChat()
    hub = type("Hub", (), {"client": type("Game", (), {"chat": chat})()})()
    conn = Connection(None, hub, verifier=None, user=principal(), config=GameSettings())  # type: ignore[arg-type]
    conn.say("too early")  # no chat room yet: refused, nothing posted
    await conn.open_chat("r-" + "0" * 24, "ana")
    (sink,) = chat.sinks
    sink(None, chat_frame(8, 2.0, "bo", "new"))  # a live line, rendered once for all
    sink(None, "")  # an edit, a reaction, a membership event: not shown
    chat.refuse = {
        "third": RateLimited("slow down"),
        "fourth": RealmError.from_code("muted", "you are muted", {}),
    }
    for text in ("first", "second", "third", "fourth"):
        conn.say(text)
    assert conn._saying is not None
    await conn._saying
    frames = [orjson.loads(line) for line in conn.outbox.lines]
    assert frames[0]["code"] == "chat_unavailable"
    assert [(f["seq"], f["text"]) for f in frames if f["t"] == "chat"] == [(5, "old"), (8, "new")]
    assert frames[1] == {"t": "chat", "seq": 5, "from": "bo", "text": "old", "at": 1500}
    # posted in the order said, one at a time; refusals as the game's error frames
    assert [text for _, _, text in chat.sent] == ["first", "second"]
    assert [f["code"] for f in frames if f["t"] == "error"][1:] == ["throttled", "muted"]
    await conn.close_chat()
    assert len(chat.closed) == 1 and conn.chat_room == ""
