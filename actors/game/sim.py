"""The simulation of one room: a plain, deterministic state machine, no Ray, no clock.

Time is the tick number: ``now_ms = tick * 1000 // tick_hz``. Randomness comes
from a small generator whose state is part of the room's state. So the same
snapshot plus the same commands applied at the same ticks give the same room:
that is how a room comes back from a crash (``actors.game.room``), and how
tests run it with a fake clock.

Inputs are queued per player (``queue_input``) and applied in order by
``step``: a move waits in its queue until the class's step time has passed
since the last, an attack is checked against its cooldown when its turn
comes. Every refused input is counted per player and reported (``refusals``);
a cheating one (a teleport, moves faster than the class walks, an attack
before its cooldown) is counted as such too, and none changes anything.

What the players see is built by ``actors.game.view`` from ``public()``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from actors.game import content
from actors.game.content import CLASSES, INVENTORY_SIZE, ITEMS, MONSTERS, WORN
from actors.game.world import Zone, distance

NEIGHBOURS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]
#: Refusal codes counted as cheating.
CHEATS = frozenset({"teleport", "too_fast", "cooldown"})
MAX_INPUT_NUMBER = 2**53


class Rng:
    """A small deterministic generator (xorshift64*) whose state is one integer."""

    MASK = 2**64 - 1

    def __init__(self, state: int) -> None:
        self.state = (state & self.MASK) or 0x9E3779B97F4A7C15

    def next(self) -> int:
        x = self.state
        x ^= (x >> 12) & self.MASK
        x ^= (x << 25) & self.MASK
        x ^= (x >> 27) & self.MASK
        self.state = x & self.MASK
        return (x * 0x2545F4914F6CDD1D) & self.MASK

    def below(self, n: int) -> int:
        return self.next() % n


@dataclass
class Player:
    id: str
    seat: str
    character: str
    name: str
    cls: str
    level: int
    xp: int
    kills: int
    deaths: int
    x: int
    y: int
    hp: int
    dead_until: int = 0  #: ms; 0 when alive
    next_step: int = 0
    next_attack: int = 0
    last_n: int = 0
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    refused: dict[str, int] = field(default_factory=dict)
    #: Carried items (kinds, in the order picked up), and the worn ones ("" none).
    items: list[str] = field(default_factory=list)
    weapon: str = ""
    armour: str = ""
    #: Changes to the inventory so far, over the character's life: each write of it to
    #: the characters shard carries this, and a write not above the last is ignored.
    inv: int = 0
    version: int = 0

    @property
    def stats(self) -> content.Stats:
        return CLASSES[self.cls]

    @property
    def max_hp(self) -> int:
        return content.scaled(self.stats.hp, self.level)

    @property
    def damage(self) -> int:
        bonus = ITEMS[self.weapon].attack if self.weapon else 0
        return content.scaled(self.stats.damage, self.level) + bonus

    @property
    def defence(self) -> int:
        return ITEMS[self.armour].defence if self.armour else 0

    @property
    def alive(self) -> bool:
        return self.dead_until == 0


@dataclass
class Monster:
    id: str
    kind: str
    home_x: int
    home_y: int
    radius: int
    x: int
    y: int
    hp: int
    boss: bool = False
    dead_until: int = 0
    next_step: int = 0
    next_attack: int = 0
    target: str = ""
    version: int = 0

    @property
    def spec(self) -> content.MonsterKind:
        return MONSTERS[self.kind]

    @property
    def level(self) -> int:
        return self.spec.level

    @property
    def max_hp(self) -> int:
        return self.spec.stats.hp

    @property
    def alive(self) -> bool:
        return self.dead_until == 0


@dataclass
class Gold:
    id: str
    x: int
    y: int
    amount: int
    #: Index of the map's loot spot it belongs to (-1: a monster's drop).
    spot: int
    expires: int = 0  #: ms; 0 never
    version: int = 0


@dataclass
class Drop:
    """An item on the ground: a monster's drop, or one a player dropped."""

    id: str
    x: int
    y: int
    item: str
    expires: int = 0  #: ms
    version: int = 0


@dataclass
class Refusal:
    seat: str
    n: int | None
    code: str
    message: str


class Sim:
    """One room's world. ``step()`` advances it one tick."""

    def __init__(
        self, zone: Zone, *, tick_hz: int = 20, seed: int = 1, input_queue: int = 8
    ) -> None:
        self.zone = zone
        self.tick_hz = tick_hz
        self.input_queue = input_queue
        self.tick = 0
        self.rng = Rng(seed)
        self.counter = 0
        self.players: dict[str, Player] = {}  #: by seat
        self.by_id: dict[str, Player] = {}
        self.monsters: dict[str, Monster] = {}
        self.golds: dict[str, Gold] = {}
        self.drops: dict[str, Drop] = {}
        #: Loot spots waiting to come back: spot index -> ms.
        self.spot_respawns: dict[int, int] = {}
        #: What the last step produced (read and cleared by the room).
        self.events: list[dict[str, Any]] = []
        self.refusals: list[Refusal] = []
        #: Side effects for the world outside: ("gold", seat, amount, key), ("portal", seat,
        #: zone), ("items", seat) (its inventory changed: worth saving now).
        self.effects: list[tuple[Any, ...]] = []
        self.cheats = 0
        for group in zone.monsters:
            for _ in range(group["count"]):
                self._spawn_monster(group["kind"], group["x"], group["y"], group["radius"])
        for spot in range(len(zone.loot)):
            self._place_spot(spot)

    # --- time ---------------------------------------------------------------

    @property
    def tick_ms(self) -> int:
        return 1000 // self.tick_hz

    def ms(self, tick: int | None = None) -> int:
        return (self.tick if tick is None else tick) * 1000 // self.tick_hz

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # --- players ------------------------------------------------------------

    def add_player(self, seat: str, character: dict[str, Any]) -> Player:
        """Seat a character (``{"id", "name", "class", "level", "xp", "kills",
        "deaths"}``) at a spawn point; the seat's player if it is already in."""
        player = self.players.get(seat)
        if player is not None:
            return player
        x, y = self._spawn_point()
        level = content.level_for_xp(int(character.get("xp", 0)))
        items = [str(i) for i in character.get("items", ()) if i in ITEMS][:INVENTORY_SIZE]
        weapon, armour = str(character.get("weapon", "")), str(character.get("armour", ""))
        player = Player(
            id=self._id("p"),
            seat=seat,
            character=str(character["id"]),
            name=str(character["name"]),
            cls=str(character["class"]),
            level=level,
            xp=int(character.get("xp", 0)),
            kills=int(character.get("kills", 0)),
            deaths=int(character.get("deaths", 0)),
            x=x,
            y=y,
            hp=0,
            items=items,
            weapon=weapon if ITEMS.get(weapon, None) and ITEMS[weapon].slot == "weapon" else "",
            armour=armour if ITEMS.get(armour, None) and ITEMS[armour].slot == "armour" else "",
            inv=int(character.get("inv", 0)),
        )
        player.hp = player.max_hp
        self.players[seat] = player
        self.by_id[player.id] = player
        return player

    def remove_player(self, seat: str) -> Player | None:
        player = self.players.pop(seat, None)
        if player is not None:
            del self.by_id[player.id]
        return player

    def _spawn_point(self) -> tuple[int, int]:
        spawns = self.zone.spawns
        return spawns[self.rng.below(len(spawns))]

    def queue_input(self, seat: str, frame: dict[str, Any]) -> None:
        """Queue a checked input frame (``move`` or ``attack``) for its player;
        a full queue refuses it (``too_fast``)."""
        player = self.players.get(seat)
        if player is None:
            self.refusals.append(Refusal(seat, frame.get("n"), "not_joined", "no seat here"))
            return
        if len(player.queue) >= self.input_queue:
            self._refuse(
                player, frame, "too_fast", "inputs are arriving faster than they can be applied"
            )
            return
        player.queue.append(frame)

    def _refuse(self, player: Player, frame: dict[str, Any], code: str, message: str) -> None:
        player.refused[code] = player.refused.get(code, 0) + 1
        if code in CHEATS:
            self.cheats += 1
        if isinstance(frame.get("n"), int):
            player.last_n = max(player.last_n, frame["n"])
        self.refusals.append(Refusal(player.seat, frame.get("n"), code, message))

    # --- the tick -----------------------------------------------------------

    def step(self) -> None:
        """Advance one tick: respawns, players' inputs, monsters, deaths."""
        self.tick += 1
        now = self.ms()
        self._respawns(now)
        for player in list(self.players.values()):
            self._inputs(player, now)
        for monster in list(self.monsters.values()):
            if monster.alive:
                self._monster(monster, now)
        for gold in list(self.golds.values()):
            if gold.expires and gold.expires <= now:
                del self.golds[gold.id]
        for drop in list(self.drops.values()):
            if drop.expires <= now:
                del self.drops[drop.id]

    def drain(self) -> tuple[list[dict[str, Any]], list[Refusal], list[tuple[Any, ...]]]:
        """The events, refusals and effects since the last drain."""
        out = (self.events, self.refusals, self.effects)
        self.events, self.refusals, self.effects = [], [], []
        return out

    def _respawns(self, now: int) -> None:
        for player in self.players.values():
            if not player.alive and player.dead_until <= now:
                player.dead_until = 0
                player.x, player.y = self._spawn_point()
                player.hp = player.max_hp
                player.version += 1
                self.events.append({"e": "respawn", "i": player.id})
        for monster in list(self.monsters.values()):
            if not monster.alive and monster.dead_until <= now:
                if monster.boss:
                    del self.monsters[monster.id]
                    continue
                monster.dead_until = 0
                monster.x, monster.y = self._near(monster.home_x, monster.home_y, monster.radius)
                monster.hp = monster.max_hp
                monster.target = ""
                monster.version += 1
                self.events.append({"e": "respawn", "i": monster.id})
        for spot, when in list(self.spot_respawns.items()):
            if when <= now:
                del self.spot_respawns[spot]
                self._place_spot(spot)

    def _inputs(self, player: Player, now: int) -> None:
        moved = False
        while player.queue:
            frame = player.queue[0]
            if not player.alive:
                player.queue.popleft()
                self._refuse(player, frame, "dead", "you are dead; wait for the respawn")
                continue
            if frame["t"] == "move":
                if moved or now < player.next_step:
                    return  # waits for its turn: at most one step per tick, at the class's pace
                player.queue.popleft()
                moved = self._move(player, frame, now)
            elif frame["t"] == "attack":
                player.queue.popleft()
                self._attack(player, frame, now)
            else:
                player.queue.popleft()
                self._item_input(player, frame, now)

    def _move(self, player: Player, frame: dict[str, Any], now: int) -> bool:
        x, y = frame["x"], frame["y"]
        if distance(player.x, player.y, x, y) != 1:
            self._refuse(
                player, frame, "teleport", f"({x}, {y}) is not next to ({player.x}, {player.y})"
            )
            return False
        if not self.zone.walkable(x, y):
            self._refuse(player, frame, "blocked", f"({x}, {y}) cannot be walked on")
            return False
        player.x, player.y = x, y
        player.next_step = now + player.stats.step_ms
        player.last_n = max(player.last_n, frame["n"])
        player.version += 1
        for gold in list(self.golds.values()):
            if gold.x == x and gold.y == y:
                self._pick_up(player, gold, now)
        for drop in list(self.drops.values()):
            if drop.x == x and drop.y == y:
                self._pick_up_item(player, drop)
        portal = self.zone.portal_at(x, y)
        if portal is not None:
            self.effects.append(("portal", player.seat, portal["to"]))
        return True

    def _pick_up(self, player: Player, gold: Gold, now: int) -> None:
        del self.golds[gold.id]
        if gold.spot >= 0:
            self.spot_respawns[gold.spot] = now + int(self.zone.loot[gold.spot]["respawn_s"] * 1000)
        key = f"{gold.id}.t{self.tick}"
        self.effects.append(("gold", player.seat, gold.amount, key))
        self.events.append({"e": "loot", "i": player.id, "v": gold.amount})

    def _pick_up_item(self, player: Player, drop: Drop) -> None:
        if len(player.items) >= INVENTORY_SIZE:
            # The step stands (no ``n``: a predicting client keeps its tile); the item stays.
            player.refused["inventory_full"] = player.refused.get("inventory_full", 0) + 1
            self.refusals.append(
                Refusal(player.seat, None, "inventory_full", "your inventory is full")
            )
            return
        del self.drops[drop.id]
        player.items.append(drop.item)
        self._inventory_changed(player)
        self.events.append({"e": "item", "i": player.id, "c": drop.item})

    def _inventory_changed(self, player: Player) -> None:
        player.inv += 1
        player.version += 1
        self.effects.append(("items", player.seat))

    def _item_input(self, player: Player, frame: dict[str, Any], now: int) -> None:
        """``use``, ``equip``, ``unequip`` or ``drop``: checked when its turn comes."""
        kind = frame["t"]
        if kind == "unequip":
            slot = frame["slot"]
            worn = getattr(player, slot)
            if not worn:
                self._refuse(player, frame, "no_item", f"nothing worn as {slot}")
                return
            if len(player.items) >= INVENTORY_SIZE:
                self._refuse(player, frame, "inventory_full", "your inventory is full")
                return
            setattr(player, slot, "")
            player.items.append(worn)
        else:
            item = frame["item"]
            spec = ITEMS.get(item)
            if spec is None or item not in player.items:
                self._refuse(player, frame, "no_item", f"no {item!r} in your inventory")
                return
            if kind == "use":
                if spec.slot != "potion":
                    self._refuse(player, frame, "not_usable", f"a {spec.name} is worn, not used")
                    return
                if player.hp >= player.max_hp:
                    self._refuse(player, frame, "not_usable", "your hit points are full")
                    return
                player.items.remove(item)
                player.hp = min(player.max_hp, player.hp + spec.heal)
            elif kind == "equip":
                if spec.slot not in WORN:
                    self._refuse(player, frame, "not_usable", f"a {spec.name} cannot be worn")
                    return
                player.items.remove(item)
                worn = getattr(player, spec.slot)
                if worn:
                    player.items.append(worn)
                setattr(player, spec.slot, item)
            else:  # drop: on the player's tile, for anyone to pick up
                player.items.remove(item)
                drop = Drop(self._id("i"), player.x, player.y, item, now + content.ITEM_TTL_MS)
                self.drops[drop.id] = drop
        player.last_n = max(player.last_n, frame["n"])
        self._inventory_changed(player)

    def _target_of(self, player: Player, frame: dict[str, Any]) -> Player | Monster | str:
        """The attack's target, or a refusal code."""
        wanted = frame.get("target")
        if wanted is not None:
            target: Player | Monster | None = self.monsters.get(wanted) or self.by_id.get(wanted)
            if target is None or not target.alive or target is player:
                return "no_target"
            if isinstance(target, Player) and not self.zone.pvp:
                return "no_target"
            if distance(player.x, player.y, target.x, target.y) > player.stats.range:
                return "out_of_range"
            if not self.zone.line_of_sight(player.x, player.y, target.x, target.y):
                return "no_line_of_sight"
            return target
        best: tuple[int, str] | None = None
        found: Player | Monster | None = None
        candidates: list[Player | Monster] = list(self.monsters.values())
        if self.zone.pvp:
            candidates += [p for p in self.players.values() if p is not player]
        for other in candidates:
            if not other.alive:
                continue
            d = distance(player.x, player.y, other.x, other.y)
            if d > player.stats.range or not self.zone.line_of_sight(
                player.x, player.y, other.x, other.y
            ):
                continue
            if best is None or (d, other.id) < best:
                best, found = (d, other.id), other
        return found if found is not None else "no_target"

    def _attack(self, player: Player, frame: dict[str, Any], now: int) -> None:
        # One tick of slack: an input that left the client on time may arrive a tick early.
        if now < player.next_attack - self.tick_ms:
            self._refuse(
                player,
                frame,
                "cooldown",
                f"the next attack is possible in {player.next_attack - now} ms",
            )
            return
        target = self._target_of(player, frame)
        if isinstance(target, str):
            messages = {
                "no_target": "no enemy to attack there",
                "out_of_range": "the target is out of range",
                "no_line_of_sight": "a wall is in the way",
            }
            self._refuse(player, frame, target, messages[target])
            return
        player.next_attack = now + player.stats.attack_ms
        player.last_n = max(player.last_n, frame["n"])
        player.version += 1
        self._hit(player, target, player.damage, now)

    def _hit(
        self, source: Player | Monster, target: Player | Monster, damage: int, now: int
    ) -> None:
        if isinstance(target, Player) and target.armour:
            damage = max(1, damage - target.defence)
        target.hp = max(0, target.hp - damage)
        target.version += 1
        self.events.append({"e": "hit", "s": source.id, "d": target.id, "v": damage})
        if target.hp == 0:
            self._die(target, source, now)
        elif isinstance(target, Monster) and not target.target and isinstance(source, Player):
            target.target = source.id

    def _die(self, victim: Player | Monster, killer: Player | Monster, now: int) -> None:
        self.events.append({"e": "die", "i": victim.id, "by": killer.id})
        if isinstance(victim, Player):
            victim.dead_until = now + content.PLAYER_RESPAWN_MS
            victim.deaths += 1
            victim.queue.clear()
        else:
            spec = victim.spec
            victim.dead_until = now + max(spec.respawn_ms, 1)
            victim.target = ""
            if spec.gold:
                gold = Gold(
                    self._id("g"),
                    victim.x,
                    victim.y,
                    spec.gold,
                    -1,
                    expires=now + content.DROP_TTL_MS,
                )
                self.golds[gold.id] = gold
            for item, chance in spec.drops:
                if self.rng.below(100) < chance:
                    drop = Drop(self._id("i"), victim.x, victim.y, item, now + content.ITEM_TTL_MS)
                    self.drops[drop.id] = drop
        if isinstance(killer, Player):
            killer.kills += 1
            if isinstance(victim, Monster):
                self._gain(killer, victim.spec.xp)
            killer.version += 1

    def _gain(self, player: Player, xp: int) -> None:
        player.xp += xp
        level = content.level_for_xp(player.xp)
        if level > player.level:
            player.level = level
            player.hp = player.max_hp
            self.events.append({"e": "lvl", "i": player.id, "l": level})

    # --- monsters -----------------------------------------------------------

    def _spawn_monster(
        self, kind: str, x: int, y: int, radius: int, *, boss: bool = False
    ) -> Monster:
        mx, my = self._near(x, y, radius)
        spec = MONSTERS[kind]
        monster = Monster(self._id("m"), kind, x, y, radius, mx, my, spec.stats.hp, boss=boss)
        self.monsters[monster.id] = monster
        return monster

    def spawn_boss(self, kind: str, x: int, y: int) -> Monster | None:
        """A world event: the boss ``kind`` appears at (x, y), unless one is alive."""
        if any(m.boss and m.alive for m in self.monsters.values()):
            return None
        monster = self._spawn_monster(kind, x, y, 0, boss=True)
        self.events.append({"e": "boss", "i": monster.id, "c": kind})
        return monster

    def _near(self, x: int, y: int, radius: int) -> tuple[int, int]:
        for _ in range(20):
            nx = x + self.rng.below(2 * radius + 1) - radius
            ny = y + self.rng.below(2 * radius + 1) - radius
            if self.zone.walkable(nx, ny):
                return nx, ny
        return x, y

    def _monster(self, monster: Monster, now: int) -> None:
        spec = monster.spec
        target = self.by_id.get(monster.target)
        if target is not None and (
            not target.alive
            or distance(monster.x, monster.y, monster.home_x, monster.home_y)
            > monster.radius + 2 * spec.aggro
        ):
            target = None
            monster.target = ""
        if target is None:
            target = self._nearest_player(monster, spec.aggro)
            monster.target = target.id if target is not None else ""
        if target is not None:
            d = distance(monster.x, monster.y, target.x, target.y)
            if d <= spec.stats.range and self.zone.line_of_sight(
                monster.x, monster.y, target.x, target.y
            ):
                if now >= monster.next_attack:
                    monster.next_attack = now + spec.stats.attack_ms
                    self._hit(monster, target, spec.stats.damage, now)
                return
            if now >= monster.next_step:
                self._step_towards(monster, target.x, target.y, now)
            return
        if now >= monster.next_step and self.rng.below(8) == 0:
            dx, dy = NEIGHBOURS[self.rng.below(8)]
            x, y = monster.x + dx, monster.y + dy
            if self.zone.walkable(x, y) and distance(x, y, monster.home_x, monster.home_y) <= max(
                monster.radius, 1
            ):
                self._place(monster, x, y, now)
            elif distance(monster.x, monster.y, monster.home_x, monster.home_y) > monster.radius:
                self._step_towards(monster, monster.home_x, monster.home_y, now)

    def _nearest_player(self, monster: Monster, within: int) -> Player | None:
        best: tuple[int, str] | None = None
        found = None
        for player in self.players.values():
            if not player.alive:
                continue
            d = distance(monster.x, monster.y, player.x, player.y)
            if (
                d <= within
                and (best is None or (d, player.id) < best)
                and self.zone.line_of_sight(monster.x, monster.y, player.x, player.y)
            ):
                best, found = (d, player.id), player
        return found

    def _step_towards(self, monster: Monster, tx: int, ty: int, now: int) -> None:
        best: tuple[int, int, int] | None = None
        taken = {(m.x, m.y) for m in self.monsters.values() if m.alive and m is not monster}
        for index, (dx, dy) in enumerate(NEIGHBOURS):
            x, y = monster.x + dx, monster.y + dy
            if not self.zone.walkable(x, y) or (x, y) in taken:
                continue
            candidate = (distance(x, y, tx, ty), abs(dx) + abs(dy), index)
            if best is None or candidate < best:
                best = candidate
        if best is not None and best[0] < distance(monster.x, monster.y, tx, ty):
            dx, dy = NEIGHBOURS[best[2]]
            self._place(monster, monster.x + dx, monster.y + dy, now)

    def _place(self, monster: Monster, x: int, y: int, now: int) -> None:
        monster.x, monster.y = x, y
        monster.next_step = now + monster.spec.stats.step_ms
        monster.version += 1

    def _place_spot(self, spot: int) -> None:
        loot = self.zone.loot[spot]
        gold = Gold(self._id("g"), loot["x"], loot["y"], int(loot["gold"]), spot)
        self.golds[gold.id] = gold

    # --- what is seen -------------------------------------------------------

    def entities(self) -> list[Player | Monster | Gold | Drop]:
        return [
            *self.players.values(),
            *self.monsters.values(),
            *self.golds.values(),
            *self.drops.values(),
        ]

    def you(self, seat: str) -> dict[str, Any]:
        """A player's own stats (``you`` in frames)."""
        p = self.players[seat]
        stats = p.stats
        return {
            "hp": p.hp,
            "H": p.max_hp,
            "l": p.level,
            "xp": p.xp,
            "nx": content.xp_for_level(min(p.level + 1, content.MAX_LEVEL)),
            "kills": p.kills,
            "deaths": p.deaths,
            "cd": max(0, p.next_attack - self.ms()),
            "range": stats.range,
            "step_ms": stats.step_ms,
            "attack_ms": stats.attack_ms,
            "dmg": p.damage,
            "def": p.defence,
            "bag": list(p.items),
            "wpn": p.weapon,
            "arm": p.armour,
        }

    def progress(self, seat: str) -> dict[str, Any]:
        """What of a player is durable: its character's progress."""
        p = self.players[seat]
        return {
            "character": p.character,
            "level": p.level,
            "xp": p.xp,
            "kills": p.kills,
            "deaths": p.deaths,
            "items": list(p.items),
            "weapon": p.weapon,
            "armour": p.armour,
            "inv": p.inv,
        }

    # --- snapshots ----------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """The whole state as plain data (a snapshot)."""
        return {
            "zone": self.zone.zone,
            "tick_hz": self.tick_hz,
            "tick": self.tick,
            "rng": self.rng.state,
            "counter": self.counter,
            "cheats": self.cheats,
            "players": [
                [
                    p.id,
                    p.seat,
                    p.character,
                    p.name,
                    p.cls,
                    p.level,
                    p.xp,
                    p.kills,
                    p.deaths,
                    p.x,
                    p.y,
                    p.hp,
                    p.dead_until,
                    p.next_step,
                    p.next_attack,
                    p.last_n,
                    list(p.queue),
                    p.refused,
                    list(p.items),
                    p.weapon,
                    p.armour,
                    p.inv,
                ]
                for p in self.players.values()
            ],
            "monsters": [
                [
                    m.id,
                    m.kind,
                    m.home_x,
                    m.home_y,
                    m.radius,
                    m.x,
                    m.y,
                    m.hp,
                    m.boss,
                    m.dead_until,
                    m.next_step,
                    m.next_attack,
                    m.target,
                ]
                for m in self.monsters.values()
            ],
            "golds": [[g.id, g.x, g.y, g.amount, g.spot, g.expires] for g in self.golds.values()],
            "drops": [[d.id, d.x, d.y, d.item, d.expires] for d in self.drops.values()],
            "spot_respawns": [[spot, when] for spot, when in self.spot_respawns.items()],
        }

    @classmethod
    def from_data(cls, zone: Zone, data: dict[str, Any], *, input_queue: int = 8) -> Sim:
        sim = cls.__new__(cls)
        sim.zone = zone
        sim.tick_hz = data["tick_hz"]
        sim.input_queue = input_queue
        sim.tick = data["tick"]
        sim.rng = Rng(data["rng"])
        sim.counter = data["counter"]
        sim.cheats = data["cheats"]
        sim.players, sim.by_id, sim.monsters, sim.golds, sim.drops = {}, {}, {}, {}, {}
        for row in data["players"]:
            player = Player(*row)  # the fields in Player's order
            player.queue, player.refused = deque(player.queue), dict(player.refused)
            player.items = list(player.items)
            sim.players[player.seat] = player
            sim.by_id[player.id] = player
        for row in data["monsters"]:
            monster = Monster(*row)
            sim.monsters[monster.id] = monster
        for row in data["golds"]:
            gold = Gold(*row)
            sim.golds[gold.id] = gold
        for row in data.get("drops", ()):  # snapshots from before items have none
            drop = Drop(*row)
            sim.drops[drop.id] = drop
        sim.spot_respawns = {spot: when for spot, when in data["spot_respawns"]}
        sim.events, sim.refusals, sim.effects = [], [], []
        return sim
