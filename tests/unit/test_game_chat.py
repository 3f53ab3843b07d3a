"""A game room's chat in the chat service, without Ray: the room (``Room``) and the
game's adapter (``RayOutside``) against a real ``ChatShard`` in process, through
the chat service's own client (``ChatClient``)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.chat.client import ChatClient
from actors.chat.errors import NotAMember, RoomNotFound
from actors.chat.settings import ChatSettings
from actors.chat.shard import ChatShard
from actors.game.outside import RayOutside
from actors.game.room import Room, chat_owner
from actors.game.settings import GameSettings
from actors.runtime.clock import FakeClock
from actors.runtime.store import SQLiteStore
from tests.unit.test_chat_client import Directory, LocalRef
from tests.unit.test_game_room import CHAR, INFO, FakeOutside


@pytest.fixture
async def chat(clock: FakeClock, store: SQLiteStore, make_settings: Any) -> ChatClient:
    shard = ChatShard(ChatSettings(max_rooms_per_owner=1), clock=clock)
    await shard.open(store, "chat-shard-0", on_failure=lambda error: None)
    client = ChatClient(make_settings(chat_shards=1), directory=Directory(), clock=clock)
    client.shards.refs = [LocalRef(shard)]  # type: ignore[list-item]
    client._start_following = lambda: None  # type: ignore[method-assign]
    return client


async def test_a_game_room_s_chat_room_is_owned_by_the_game_and_holds_its_seats(
    store: SQLiteStore, clock: FakeClock, chat: ChatClient, make_settings: Any
) -> None:
    outside = RayOutside(make_settings())
    outside._chat = chat
    room = Room(GameSettings(), dict(INFO), store, FakeOutside(), clock=clock,
                on_failure=lambda error: None, chat=outside)  # fmt: skip
    await room.open()
    await room.reserve("u1", CHAR)
    await room.reserve("u2", {**CHAR, "id": "c-2", "name": "bo"})
    await room.reserve("u1", CHAR)  # already a member: nothing changes
    made = room.chat_room
    assert made.startswith("r-")
    shown = await chat.room(made, chat_owner("g-test"))
    assert shown["kind"] == "private" and shown["role"] == "owner"
    members = {m["user_id"]: m["username"] for m in await chat.members(made, "u1")}
    assert members == {chat_owner("g-test"): "game", "u1": "ana", "u2": "bo"}
    # Another user, not seated, cannot read it; a seated one posts as their character.
    with pytest.raises(RoomNotFound):
        await chat.history(made, "u3")
    sent = await chat.send(made, "u2", "hi all")
    (line,) = (await chat.history(made, "u1"))["messages"]
    assert (line["seq"], line["username"], line["text"]) == (sent["seq"], "bo", "hi all")
    # A second game room makes a chat room of its own, though the chat service lets
    # one owner have a single room here: each game room has its own owner.
    other = Room(GameSettings(), {**INFO, "id": "g-other"}, store, FakeOutside(), clock=clock,
                 on_failure=lambda error: None, chat=outside)  # fmt: skip
    await other.open()
    await other.reserve("u1", CHAR)
    assert other.chat_room and other.chat_room != made
    # The seat goes: so does the membership; the room is disposed: so is its chat room.
    room._leave(room.seats["u2"], "left")
    for task in list(room._tasks):
        await task
    with pytest.raises((NotAMember, RoomNotFound)):
        await chat.send(made, "u2", "still here?")
    await room.reserve("u2", {**CHAR, "id": "c-2", "name": "bo"})  # back: a member again
    assert (await chat.send(made, "u2", "back"))["seq"] > sent["seq"]
    await room.dispose()
    with pytest.raises(RoomNotFound):
        await chat.history(made, "u1")
