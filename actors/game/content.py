"""What the game is made of: character classes, monster kinds, levels.

Numbers are in milliseconds and tiles. The simulation reads these tables; the
browser client gets the classes from ``GET /game/classes``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    hp: int
    damage: int
    #: Attack range in tiles (Chebyshev distance; 1 is melee).
    range: int
    attack_ms: int
    #: Time one step of one tile takes: the fastest a move may follow the last.
    step_ms: int


CLASSES: dict[str, Stats] = {
    "warrior": Stats(hp=60, damage=9, range=1, attack_ms=600, step_ms=200),
    "archer": Stats(hp=40, damage=6, range=6, attack_ms=700, step_ms=180),
    "mage": Stats(hp=35, damage=11, range=5, attack_ms=1000, step_ms=200),
}


@dataclass(frozen=True)
class MonsterKind:
    stats: Stats
    level: int
    xp: int
    #: Gold the monster drops when it dies (a pile on its tile).
    gold: int
    #: A player this close (in sight) is chased.
    aggro: int
    respawn_ms: int
    #: Items it may drop when it dies: (item kind, chance in percent), each drawn apart.
    drops: tuple[tuple[str, int], ...] = ()


MONSTERS: dict[str, MonsterKind] = {
    "slime": MonsterKind(Stats(20, 3, 1, 1200, 600), level=1, xp=10, gold=2, aggro=3,
                         respawn_ms=8_000, drops=(("potion", 20),)),
    "wolf": MonsterKind(Stats(30, 5, 1, 900, 350), level=2, xp=20, gold=4, aggro=5,
                        respawn_ms=10_000, drops=(("potion", 15), ("dagger", 8),
                                                  ("leather", 8))),
    "bat": MonsterKind(Stats(18, 4, 1, 800, 300), level=2, xp=15, gold=3, aggro=5,
                       respawn_ms=8_000, drops=(("potion", 20),)),
    "skeleton": MonsterKind(Stats(45, 7, 1, 1000, 450), level=3, xp=35, gold=6, aggro=5,
                            respawn_ms=12_000, drops=(("potion", 20), ("sword", 10),
                                                      ("mail", 8))),
    "dragon": MonsterKind(Stats(400, 18, 2, 1500, 500), level=10, xp=500, gold=100, aggro=7,
                          respawn_ms=0, drops=(("potion", 100), ("axe", 100),
                                               ("plate", 100))),
}  # fmt: skip


@dataclass(frozen=True)
class ItemKind:
    name: str
    #: ``potion`` (used up by ``use``), ``weapon`` or ``armour`` (worn by ``equip``).
    slot: str
    #: A potion: hit points it gives back (up to the maximum).
    heal: int = 0
    #: A weapon: damage added to each hit.
    attack: int = 0
    #: Armour: damage taken off each hit received (a hit does at least 1).
    defence: int = 0


ITEMS: dict[str, ItemKind] = {
    "potion": ItemKind("Healing potion", "potion", heal=25),
    "dagger": ItemKind("Dagger", "weapon", attack=2),
    "sword": ItemKind("Iron sword", "weapon", attack=4),
    "axe": ItemKind("Dragonbone axe", "weapon", attack=8),
    "leather": ItemKind("Leather armour", "armour", defence=1),
    "mail": ItemKind("Chain mail", "armour", defence=3),
    "plate": ItemKind("Dragon plate", "armour", defence=6),
}
#: The slots an item may be worn in.
WORN = ("weapon", "armour")
#: Items a character carries at most (worn ones apart).
INVENTORY_SIZE = 12
#: An item on the ground (a monster's drop, or one a player dropped) disappears after this.
ITEM_TTL_MS = 60_000

#: A player's hit points and damage grow by this much per level above 1.
GROWTH_PER_LEVEL = 0.10
#: Highest level.
MAX_LEVEL = 50
#: A dead player comes back at a spawn point after this long.
PLAYER_RESPAWN_MS = 3_000
#: A gold pile a monster dropped disappears after this long.
DROP_TTL_MS = 60_000


def xp_for_level(level: int) -> int:
    """Total experience a character needs to reach ``level``."""
    return 50 * (level - 1) * level


def level_for_xp(xp: int) -> int:
    level = 1
    while level < MAX_LEVEL and xp >= xp_for_level(level + 1):
        level += 1
    return level


def scaled(value: int, level: int) -> int:
    return int(value * (1 + GROWTH_PER_LEVEL * (level - 1)))


def classes_table() -> dict[str, dict[str, int]]:
    return {name: vars(stats).copy() for name, stats in CLASSES.items()}


def items_table() -> dict[str, dict[str, str | int]]:
    return {kind: vars(item).copy() for kind, item in ITEMS.items()}
