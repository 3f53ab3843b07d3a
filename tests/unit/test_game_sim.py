"""The game's pure simulation: maps, movement, combat, monsters, loot, views, frames."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from actors.game import content, protocol, world
from actors.game.sim import Sim
from actors.game.view import Snapshot, View

# A 12x8 test zone: a wall column at x=5 (with a gap at y=6), water at (8, 2).
TILES = [
    "############",
    "#....#.....#",
    "#....#..~..#",
    "#....#.....#",
    "#....#.....#",
    "#....#.....#",
    "#..........#",
    "############",
]


def zone(**extra: Any) -> world.Zone:
    raw = {
        "format": 1, "zone": "test", "name": "Test", "width": 12, "height": 8,
        "legend": {".": "floor", "#": "wall", "~": "water"}, "tiles": TILES,
        "spawns": [{"x": 2, "y": 2}], "monsters": [], "loot": [], "portals": [], "events": [],
    }  # fmt: skip
    raw.update(extra)
    return world.parse(raw)


def character(name: str = "ana", cls: str = "warrior", xp: int = 0) -> dict[str, Any]:
    return {"id": f"c-{name}", "name": name, "class": cls, "xp": xp}


def run(sim: Sim, ticks: int) -> None:
    for _ in range(ticks):
        sim.step()


def codes(sim: Sim) -> list[str]:
    return [refusal.code for refusal in sim.drain()[1]]


# --- maps -----------------------------------------------------------------------


def test_every_shipped_map_parses_and_portals_lead_to_floor() -> None:
    for name in world.zones():
        z = world.load(name)
        assert z.width * z.height == sum(len(row) for row in z.kinds)
        for portal in z.portals:
            target = world.load(portal["to"])
            assert target.walkable(portal["tx"], portal["ty"])


def test_a_map_that_breaks_the_format_is_refused() -> None:
    with pytest.raises(world.MapError):
        zone(tiles=TILES[:-1])
    with pytest.raises(world.MapError):
        zone(spawns=[{"x": 0, "y": 0}])  # on a wall
    with pytest.raises(KeyError):
        world.load("../etc/passwd")


def test_walls_block_sight_and_water_does_not() -> None:
    z = zone()
    assert not z.line_of_sight(3, 2, 7, 2)  # the wall column at x=5
    assert z.line_of_sight(6, 2, 10, 2)  # across the water
    assert z.line_of_sight(3, 6, 8, 6)  # through the gap
    assert not z.walkable(8, 2) and not z.walkable(5, 1) and z.walkable(6, 2)


# --- movement -------------------------------------------------------------------


def test_a_step_to_a_neighbour_is_applied_and_acknowledged() -> None:
    sim = Sim(zone(), tick_hz=20)
    p = sim.add_player("u1", character())
    sim.queue_input("u1", {"t": "move", "n": 1, "x": 3, "y": 3})
    sim.step()
    assert (p.x, p.y, p.last_n) == (3, 3, 1)
    assert codes(sim) == []


def test_a_teleport_is_refused_counted_and_not_applied() -> None:
    sim = Sim(zone(), tick_hz=20)
    p = sim.add_player("u1", character())
    sim.queue_input("u1", {"t": "move", "n": 1, "x": 4, "y": 4})
    sim.step()
    assert (p.x, p.y) == (2, 2)
    assert codes(sim) == ["teleport"]
    assert p.refused == {"teleport": 1} and sim.cheats == 1


def test_a_step_into_a_wall_or_water_is_refused() -> None:
    sim = Sim(zone(), tick_hz=20)
    p = sim.add_player("u1", character())
    p.x, p.y = 4, 2
    sim.queue_input("u1", {"t": "move", "n": 1, "x": 5, "y": 2})
    sim.step()
    assert (p.x, p.y) == (4, 2) and codes(sim) == ["blocked"]
    assert sim.cheats == 0


def test_moves_wait_for_the_class_step_time() -> None:
    sim = Sim(zone(), tick_hz=20)  # 50 ms ticks; a warrior steps every 200 ms
    p = sim.add_player("u1", character())
    sim.queue_input("u1", {"t": "move", "n": 1, "x": 3, "y": 2})
    sim.queue_input("u1", {"t": "move", "n": 2, "x": 4, "y": 2})
    sim.step()
    assert p.x == 3
    run(sim, 3)  # 150 ms later: not yet
    assert p.x == 3
    sim.step()  # 200 ms
    assert p.x == 4 and p.last_n == 2


def test_moves_faster_than_the_queue_holds_are_refused_as_too_fast() -> None:
    sim = Sim(zone(), tick_hz=20, input_queue=4)
    p = sim.add_player("u1", character())
    for n in range(1, 11):
        sim.queue_input("u1", {"t": "move", "n": n, "x": 3, "y": 2 + n % 2})
    assert codes(sim) == ["too_fast"] * 6
    assert p.refused["too_fast"] == 6 and len(p.queue) == 4


# --- combat ---------------------------------------------------------------------


def _duel(cls: str = "warrior") -> tuple[Sim, Any]:
    z = zone(monsters=[{"kind": "slime", "x": 3, "y": 2, "count": 1, "radius": 0}])
    sim = Sim(z, tick_hz=20)
    p = sim.add_player("u1", character(cls=cls))
    return sim, p


def test_an_attack_in_range_hits_and_an_early_one_is_refused_as_cooldown() -> None:
    sim, p = _duel()
    (slime,) = sim.monsters.values()
    sim.queue_input("u1", {"t": "attack", "n": 1, "target": slime.id})
    sim.step()
    assert slime.hp == 20 - p.damage
    sim.queue_input("u1", {"t": "attack", "n": 2, "target": slime.id})
    sim.step()
    assert codes(sim) == ["cooldown"] and slime.hp == 20 - p.damage
    run(sim, 10)  # 600 ms later the next one is fine
    sim.drain()
    sim.queue_input("u1", {"t": "attack", "n": 3})  # no target: the nearest
    sim.step()
    assert codes(sim) == [] and slime.hp == 20 - 2 * p.damage


def test_out_of_range_and_out_of_sight_attacks_are_refused() -> None:
    z = zone(monsters=[{"kind": "slime", "x": 7, "y": 2, "count": 1, "radius": 0}])
    sim = Sim(z, tick_hz=20)
    p = sim.add_player("u1", character(cls="archer"))
    (slime,) = sim.monsters.values()
    p.x, p.y = 9, 5  # the water between: in sight
    sim.queue_input("u1", {"t": "attack", "n": 1, "target": slime.id})
    sim.step()
    assert codes(sim) == [] and slime.hp < slime.max_hp
    sim2 = Sim(z, tick_hz=20)
    q = sim2.add_player("u1", character(cls="archer"))
    (slime2,) = sim2.monsters.values()
    q.x, q.y = 3, 2  # the wall at x=5 between, 4 tiles away
    sim2.queue_input("u1", {"t": "attack", "n": 1, "target": slime2.id})
    sim2.step()
    assert codes(sim2) == ["no_line_of_sight"]
    q.x, q.y = 1, 6  # 6 tiles: in range, nothing in the way
    slime2.x, slime2.y = 8, 6  # 7 tiles: out of range
    run(sim2, 20)
    sim2.drain()
    sim2.queue_input("u1", {"t": "attack", "n": 2, "target": slime2.id})
    sim2.step()
    assert "out_of_range" in codes(sim2)


def test_killing_a_monster_gives_xp_drops_gold_and_it_respawns() -> None:
    sim, p = _duel()
    (slime,) = sim.monsters.values()
    for n in range(1, 4):
        sim.queue_input("u1", {"t": "attack", "n": n, "target": slime.id})
        run(sim, 12)
    events, _, _ = sim.drain()
    assert not slime.alive and {"e": "die", "i": slime.id, "by": p.id} in events
    assert p.xp == content.MONSTERS["slime"].xp and p.kills == 1
    (drop,) = sim.golds.values()
    assert (drop.x, drop.y, drop.amount) == (slime.x, slime.y, 2)
    # Step onto the drop: gold for the ledger, with a key that a replay repeats.
    sim.queue_input("u1", {"t": "move", "n": 9, "x": drop.x, "y": drop.y})
    sim.step()
    _, _, effects = sim.drain()
    gold = [effect for effect in effects if effect[0] == "gold"]  # an item may lie there too
    assert gold == [("gold", "u1", 2, f"{drop.id}.t{sim.tick}")]
    run(sim, content.MONSTERS["slime"].respawn_ms // 50)
    assert slime.alive and slime.hp == slime.max_hp


def test_a_monster_chases_and_kills_a_player_who_respawns() -> None:
    z = zone(monsters=[{"kind": "skeleton", "x": 4, "y": 4, "count": 1, "radius": 0}])
    sim = Sim(z, tick_hz=20)
    p = sim.add_player("u1", character(cls="mage"))
    p.x, p.y = 2, 4
    run(sim, 400)
    events, _, _ = sim.drain()
    assert any(e["e"] == "die" and e["i"] == p.id for e in events)
    assert any(e["e"] == "respawn" and e["i"] == p.id for e in events)
    assert p.deaths >= 1


def test_level_up_heals_and_raises_max_hp() -> None:
    sim = Sim(zone(), tick_hz=20)
    p = sim.add_player("u1", character(xp=95))
    p.hp = 1
    sim._gain(p, 10)  # 105 >= 100: level 2
    assert p.level == 2 and p.hp == p.max_hp == content.scaled(60, 2)


def test_gold_spots_are_picked_up_and_come_back() -> None:
    sim = Sim(zone(loot=[{"x": 3, "y": 2, "gold": 5, "respawn_s": 1}]), tick_hz=20)
    sim.add_player("u1", character())
    sim.queue_input("u1", {"t": "move", "n": 1, "x": 3, "y": 2})
    sim.step()
    assert sim.drain()[2][0][:3] == ("gold", "u1", 5) and not sim.golds
    run(sim, 20)
    assert len(sim.golds) == 1


def test_pvp_only_where_the_zone_allows_it() -> None:
    for pvp, expected in ((False, ["no_target"]), (True, [])):
        sim = Sim(zone(pvp=pvp), tick_hz=20)
        sim.add_player("u1", character("a"))
        b = sim.add_player("u2", character("b"))
        sim.queue_input("u1", {"t": "attack", "n": 1, "target": b.id})
        sim.step()
        assert codes(sim) == expected


def test_a_world_boss_spawns_once() -> None:
    sim = Sim(zone(), tick_hz=20)
    assert sim.spawn_boss("dragon", 7, 4) is not None
    assert sim.spawn_boss("dragon", 7, 4) is None
    assert sim.drain()[0][0]["e"] == "boss"


# --- determinism and snapshots ----------------------------------------------------


def _script(sim: Sim) -> None:
    sim.add_player("u1", character("a", "archer"))
    sim.add_player("u2", character("b", "warrior"))
    for tick in range(300):
        if tick % 4 == 0:
            p = sim.players["u1"]
            sim.queue_input("u1", {"t": "move", "n": tick + 1, "x": p.x + 1 - (tick // 40) % 2 * 2,
                                   "y": p.y})  # fmt: skip
        if tick % 15 == 0:
            sim.queue_input("u2", {"t": "attack", "n": tick + 1})
        sim.step()


def test_the_same_inputs_give_the_same_world() -> None:
    z = world.load("meadow")
    a, b = Sim(z, seed=7), Sim(z, seed=7)
    _script(a)
    _script(b)
    assert a.to_data() == b.to_data()


def test_a_snapshot_restores_the_same_world_and_goes_on_the_same() -> None:
    z = world.load("meadow")
    a = Sim(z, seed=3)
    _script(a)
    data = orjson.loads(orjson.dumps(a.to_data()))
    b = Sim.from_data(z, data)
    assert b.to_data() == a.to_data()
    run(a, 100)
    run(b, 100)
    assert a.to_data() == b.to_data()


# --- views ----------------------------------------------------------------------


def test_a_view_holds_only_what_is_within_its_radius_and_patches_the_difference() -> None:
    z = world.load("meadow")
    sim = Sim(z, seed=1)
    sim.monsters.clear()
    sim.golds.clear()
    a = sim.add_player("u1", character("a"))
    b = sim.add_player("u2", character("b"))
    a.x, a.y, b.x, b.y = 3, 3, 20, 3
    view = View("u1", radius=5)
    full = view.full(Snapshot(sim, 5), {"id": "r"}, resync=False)
    assert [e["i"] for e in full["ents"]] == [a.id] and full["me"] == a.id
    b.x, b.version = 7, b.version + 1
    patch = view.patch(Snapshot(sim, 5), [])
    assert patch is not None and [e["i"] for e in patch["a"]] == [b.id]
    b.y, b.version = 4, b.version + 1
    patch = view.patch(Snapshot(sim, 5), [])
    assert patch is not None and patch["u"] == [{"y": 4, "i": b.id}] and "a" not in patch
    assert view.patch(Snapshot(sim, 5), []) is None  # nothing new: nothing sent
    assert view.patch(Snapshot(sim, 5), [], heartbeat=True) == {"t": "p", "k": sim.tick, "n": 0}
    b.x, b.version = 30, b.version + 1
    patch = view.patch(Snapshot(sim, 5), [{"e": "hit", "s": b.id, "d": "m99", "v": 1}])
    assert patch is not None and patch["r"] == [b.id] and "e" not in patch


# --- frames ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json", "[1]", '{"t": "fly"}', '{"t": "move", "n": 1, "x": 1}',
        '{"t": "move", "n": 0, "x": 1, "y": 1}', '{"t": "move", "n": 1, "x": 1.5, "y": 1}',
        '{"t": "move", "n": 1, "x": true, "y": 1}', '{"t": "move", "n": 1, "x": 1, "y": 1, "z": 0}',
        '{"t": "say", "text": ""}', '{"t": "say", "text": "' + "x" * 201 + '"}',
        '{"t": "join", "room": 5}', '{"t": "attack", "n": 1, "target": 5}',
        '{"t": "ping", "c": "x"}',
    ],
)  # fmt: skip
def test_bad_frames_are_refused(text: str) -> None:
    with pytest.raises(protocol.BadFrame):
        protocol.parse(text)


def test_good_frames_parse() -> None:
    assert protocol.parse('{"t":"move","n":3,"x":4,"y":5}') == {"t": "move", "n": 3, "x": 4, "y": 5}
    assert protocol.parse('{"t":"attack","n":4}') == {"t": "attack", "n": 4, "target": None}
    assert protocol.parse('{"t":"ping","c":12.5}') == {"t": "ping", "c": 12.5}
