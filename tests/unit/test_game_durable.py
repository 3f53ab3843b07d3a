"""The game's durable actors without Ray: characters and the rooms list, restarted."""

from __future__ import annotations

import pytest

from actors.game.characters import CharacterShard
from actors.game.directory import BY_USER, QUICK, Directory, RoomInfo
from actors.game.errors import CharacterNotFound, NameTaken, RoomNotFound
from actors.game.settings import GameSettings
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, LimitReached
from actors.runtime.store import SQLiteStore


async def test_characters_are_durable_bounded_and_progress_only_grows(
    store: SQLiteStore, clock: FakeClock
) -> None:
    config = GameSettings(max_characters_per_user=2)
    shard = CharacterShard(config, clock=clock)
    await shard.open(store, "chars")
    ana = await shard.create("u1", "ana", "warrior")
    await shard.create("u1", "ana2", "mage")
    with pytest.raises(LimitReached):
        await shard.create("u1", "ana3", "mage")
    await shard.create("u2", "bo", "archer")
    with pytest.raises(NameTaken):
        await shard.create("u2", "BO", "mage")
    with pytest.raises(InvalidInput):
        await shard.create("u2", "x", "bard")
    update = {"character": ana["id"], "level": 2, "xp": 120, "kills": 3, "deaths": 1}
    assert await shard.progress("u1", [update]) == 1
    assert await shard.progress("u1", [{**update, "xp": 50, "level": 1}]) == 0  # a late write
    with pytest.raises(CharacterNotFound):
        await shard.get("u2", ana["id"])  # another user's: as a missing one
    again = CharacterShard(config, clock=clock)  # restarted on the same store
    await again.open(store, "chars")
    assert (await again.get("u1", ana["id"]))["xp"] == 120
    assert await again.find(ana["id"]) == "u1"


async def test_the_rooms_list_keeps_rooms_quotas_and_filters(
    store: SQLiteStore, clock: FakeClock
) -> None:
    config = GameSettings(max_rooms_per_user=1, max_players_per_room=2)
    rooms = Directory(config, clock=clock)
    await rooms.open(store, "dir")
    mine = RoomInfo("g-1", "arena", "duel", "fun", False, "", "u1", 4, BY_USER, 1.0)
    await rooms.open_room(mine)
    with pytest.raises(LimitReached):
        await rooms.open_room(
            RoomInfo("g-2", "arena", "duel", "", False, "", "u1", 4, BY_USER, 2.0)
        )
    secret = RoomInfo("g-3", "arena", "duel", "fun", True, "abc", "u2", 4, BY_USER, 3.0)
    await rooms.open_room(secret)
    assert [r["id"] for r in await rooms.list(label="fun")] == ["g-1"]  # private: not listed
    assert await rooms.check_code("g-3", "abc") and not await rooms.check_code("g-3", "abd")
    quick = await rooms.quick("meadow", "u3")
    assert quick["made_by"] == QUICK and (await rooms.quick("meadow", "u4"))["id"] == quick["id"]
    third = await rooms.quick("meadow", "u5")  # two seats handed out: a new room
    assert third["id"] != quick["id"]
    await rooms.close_room("g-1")
    again = Directory(config, clock=clock)
    await again.open(store, "dir")
    with pytest.raises(RoomNotFound):
        await again.get("g-1")
    assert (await again.get("g-3"))["code"] == "abc"
