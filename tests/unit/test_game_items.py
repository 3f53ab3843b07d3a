"""Inventory items: drops, pickups, use/equip/unequip/drop, and their durability
(the room's snapshot plus log, the characters shard's journal). Tick by tick, no Ray."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from actors.game import content, protocol
from actors.game.characters import CharacterShard
from actors.game.settings import GameSettings
from actors.game.sim import Drop, Sim
from actors.game.view import Snapshot, View
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput
from actors.runtime.store import SQLiteStore
from tests.unit.test_game_room import CHAR, FakeOutside, frames, make
from tests.unit.test_game_sim import character, codes, run, zone


@pytest.fixture
def slimes_drop_potions(monkeypatch: pytest.MonkeyPatch) -> None:
    always = dataclasses.replace(content.MONSTERS["slime"], drops=(("potion", 100),))
    monkeypatch.setitem(content.MONSTERS, "slime", always)


def _duel() -> tuple[Sim, Any]:
    z = zone(monsters=[{"kind": "slime", "x": 3, "y": 2, "count": 1, "radius": 0}])
    sim = Sim(z, tick_hz=20)
    return sim, sim.add_player("u1", character())


def _give(sim: Sim, player: Any, *items: str) -> None:
    """Items lying next to the player, walked over: picked up the way a player does."""
    for item in items:
        drop = Drop(sim._id("i"), player.x, player.y + 1, item, expires=10**9)
        sim.drops[drop.id] = drop
        n = player.last_n + 1
        sim.queue_input(player.seat, {"t": "move", "n": n, "x": player.x, "y": player.y + 1})
        run(sim, 5)
        sim.queue_input(player.seat, {"t": "move", "n": n + 1, "x": player.x, "y": player.y - 1})
        run(sim, 5)
    sim.drain()


def test_a_monster_drops_an_item_that_a_step_picks_up(slimes_drop_potions: None) -> None:
    sim, p = _duel()
    (slime,) = sim.monsters.values()
    for n in range(1, 4):
        sim.queue_input("u1", {"t": "attack", "n": n, "target": slime.id})
        run(sim, 12)
    assert not slime.alive
    (drop,) = sim.drops.values()
    assert (drop.x, drop.y, drop.item) == (slime.x, slime.y, "potion")
    seen = View("u1", 12).full(Snapshot(sim, 12), {}, resync=False)["ents"]
    assert {"i": drop.id, "k": "i", "c": "potion", "x": drop.x, "y": drop.y} in seen
    sim.drain()
    inv = p.inv
    sim.queue_input("u1", {"t": "move", "n": 9, "x": drop.x, "y": drop.y})
    sim.step()
    events, _, effects = sim.drain()
    assert {"e": "item", "i": p.id, "c": "potion"} in events and ("items", "u1") in effects
    assert p.items == ["potion"] and p.inv == inv + 1 and not sim.drops
    assert sim.you("u1")["bag"] == ["potion"]


def test_use_equip_unequip_and_drop_change_the_player_and_bad_ones_are_refused() -> None:
    sim, p = _duel()
    sim.monsters.clear()
    _give(sim, p, "potion", "sword", "mail")
    assert p.items == ["potion", "sword", "mail"]
    base = p.damage
    # a potion at full health, a sword used, a potion worn, an item not carried, nothing worn
    for n, frame in enumerate(
        [
            {"t": "use", "item": "potion"},
            {"t": "use", "item": "sword"},
            {"t": "equip", "item": "potion"},
            {"t": "drop", "item": "axe"},
            {"t": "equip", "item": "bogus"},
            {"t": "unequip", "slot": "weapon"},
        ],
        start=100,
    ):
        sim.queue_input("u1", {**frame, "n": n})
    sim.step()
    assert codes(sim) == ["not_usable", "not_usable", "not_usable", "no_item", "no_item", "no_item"]
    assert p.items == ["potion", "sword", "mail"] and p.last_n == 105  # acknowledged, not applied
    p.hp = 10
    sim.queue_input("u1", {"t": "use", "n": 200, "item": "potion"})
    sim.queue_input("u1", {"t": "equip", "n": 201, "item": "sword"})
    sim.queue_input("u1", {"t": "equip", "n": 202, "item": "mail"})
    sim.step()
    assert codes(sim) == []
    assert p.hp == 10 + content.ITEMS["potion"].heal and p.items == []
    assert (p.weapon, p.armour) == ("sword", "mail")
    assert p.damage == base + content.ITEMS["sword"].attack and p.defence == 3
    you = sim.you("u1")
    assert (you["wpn"], you["arm"], you["dmg"], you["def"]) == ("sword", "mail", p.damage, 3)
    # armour takes its defence off a hit
    hp = p.hp
    sim._hit(p, p, 5, sim.ms())
    assert p.hp == hp - 2
    # unequip puts it back in the bag; drop lays it on the player's tile
    sim.queue_input("u1", {"t": "unequip", "n": 203, "slot": "weapon"})
    sim.queue_input("u1", {"t": "drop", "n": 204, "item": "sword"})
    sim.step()
    assert codes(sim) == [] and p.weapon == "" and p.items == []
    (dropped,) = sim.drops.values()
    assert (dropped.x, dropped.y, dropped.item) == (p.x, p.y, "sword")
    # it lies there until it expires
    run(sim, content.ITEM_TTL_MS // 50 + 1)
    assert not sim.drops


def test_the_inventory_has_a_limit(slimes_drop_potions: None) -> None:
    sim, p = _duel()
    sim.monsters.clear()
    p.items = ["potion"] * content.INVENTORY_SIZE
    p.weapon = "dagger"
    sim.queue_input("u1", {"t": "unequip", "n": 1, "slot": "weapon"})
    sim.step()
    assert codes(sim) == ["inventory_full"] and p.weapon == "dagger"
    drop = Drop("i99", p.x + 1, p.y, "sword", expires=10**9)
    sim.drops[drop.id] = drop
    sim.queue_input("u1", {"t": "move", "n": 2, "x": p.x + 1, "y": p.y})
    sim.step()
    _, refusals, _ = sim.drain()
    # The step stands, the item stays; the error has no ``n`` (the client keeps its tile).
    assert [(r.code, r.n) for r in refusals] == [("inventory_full", None)]
    assert (p.x, p.y) == (drop.x, drop.y) and drop.id in sim.drops and p.last_n == 2


def test_items_survive_a_snapshot_and_the_same_future_follows() -> None:
    sim, p = _duel()
    p.items, p.weapon, p.inv = ["potion", "mail"], "sword", 7
    sim.drops["i50"] = Drop("i50", 4, 4, "axe", expires=99_000)
    again = Sim.from_data(sim.zone, orjson.loads(orjson.dumps(sim.to_data())))
    q = again.players["u1"]
    assert (q.items, q.weapon, q.inv) == (["potion", "mail"], "sword", 7)
    assert again.drops["i50"] == sim.drops["i50"]
    for s in (sim, again):
        s.queue_input("u1", {"t": "equip", "n": 1, "item": "mail"})
        run(s, 3)
    assert again.to_data() == sim.to_data()


@pytest.mark.parametrize(
    "text",
    [
        '{"t": "use", "n": 1}',
        '{"t": "use", "n": 1, "item": 5}',
        '{"t": "equip", "n": 0, "item": "sword"}',
        '{"t": "drop", "n": 1, "item": "' + "x" * 40 + '"}',
        '{"t": "unequip", "n": 1, "slot": "ring"}',
        '{"t": "unequip", "n": 1, "slot": "weapon", "item": "sword"}',
    ],
)
def test_bad_item_frames_are_refused(text: str) -> None:
    with pytest.raises(protocol.BadFrame):
        protocol.parse(text)


async def test_a_pickup_is_saved_at_once_and_a_replayed_one_writes_the_same(
    store: SQLiteStore, clock: FakeClock
) -> None:
    outside = FakeOutside()
    room = make(store, clock, outside)
    await room.open()
    await room.reserve("u1", {**CHAR, "items": ["potion"], "weapon": "dagger", "inv": 4})
    room.attach("r1", "conn1", "u1")
    me = room.sim.players["u1"]
    assert (me.items, me.weapon, me.inv) == (["potion"], "dagger", 4)  # from the character
    room.sim.monsters.clear()
    room.sim.drops["i900"] = Drop("i900", me.x + 1, me.y, "mail", expires=10**9)
    room.take_snapshot()  # the item is in the snapshot; what follows, in the log
    for task in list(room._tasks):
        await task
    outside.progress.clear()
    room.inputs("r1", [("conn1", "u1", {"t": "move", "n": 1, "x": me.x + 1, "y": me.y})])
    room.tick_once()
    room.inputs("r1", [("conn1", "u1", {"t": "equip", "n": 2, "item": "mail"})])
    clock.advance(0.05)
    room.tick_once()
    for task in list(room._tasks):
        await task
    saved = [p for _, p in outside.progress]
    assert [(p["items"], p["armour"], p["inv"]) for p in saved] == [
        (["potion", "mail"], "", 5),
        (["potion"], "mail", 6),
    ]  # each change written at once, without waiting for the snapshot
    you = [f["you"] for f in frames(room) if f.get("t") == "p" and "you" in f]
    assert {"bag": ["potion", "mail"]}.items() <= you[0].items()  # the player sees its own
    assert you[-1]["arm"] == "mail" and you[-1]["bag"] == ["potion"]
    room._flush()
    await room.journal.drain()
    # the room is killed; its replay picks up and equips again: the same writes
    again = make(store, clock, outside)
    await again.open()
    again.tick_once()  # the last logged input is applied on the next tick, as it was
    back = again.sim.players["u1"]
    assert (back.items, back.armour, back.inv) == (["potion"], "mail", 6)
    assert again.sim.progress("u1")["inv"] == saved[-1]["inv"]


async def test_the_characters_shard_keeps_inventories_in_its_journal(
    store: SQLiteStore, clock: FakeClock
) -> None:
    shard = CharacterShard(GameSettings(), clock=clock)
    await shard.open(store, "chars")
    ana = await shard.create("u1", "ana", "warrior")
    assert (ana["items"], ana["weapon"], ana["armour"]) == ([], "", "")
    base = {"character": ana["id"], "level": 1, "xp": 0, "kills": 0, "deaths": 0}
    write = {**base, "items": ["potion", "potion"], "weapon": "sword", "armour": "", "inv": 3}
    assert await shard.progress("u1", [write]) == 1
    assert await shard.progress("u1", [write]) == 0  # a room replaying: the same count
    stale = {**write, "items": [], "inv": 2}
    assert await shard.progress("u1", [stale]) == 0  # a late write from an older room
    with pytest.raises(InvalidInput):
        await shard.progress("u1", [{**write, "items": ["crown"], "inv": 4}])
    with pytest.raises(InvalidInput):
        await shard.progress("u1", [{**write, "items": ["potion"] * 13, "inv": 4}])
    again = CharacterShard(GameSettings(), clock=clock)  # restarted on the same store
    await again.open(store, "chars")
    got = await again.get("u1", ana["id"])
    assert (got["items"], got["weapon"], got["inv"]) == (["potion", "potion"], "sword", 3)
