"""Characters: durable, many users to a shard actor (keyed by user id).

A character's name and class are chosen once; its progress (level, experience,
kills, deaths) is written by the rooms it plays in, each write carrying the
experience it reports, which only grows: a late or repeated write from a room
that restarted never takes progress back. Its inventory (the items it carries
and wears) is written the same way: each write carries the inventory's change
count (``inv``), which a room increments on every pickup, use, equip, unequip
and drop; a write not above the count held is ignored, so a room that replays
its log after a crash writes the same inventories again, harmlessly.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from actors.game.content import CLASSES, INVENTORY_SIZE, ITEMS
from actors.game.errors import CharacterNotFound, NameTaken
from actors.game.settings import GameSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput, LimitReached
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

SHARD_PREFIX = "game-characters"
NAME = re.compile(r"^[A-Za-z0-9_-]{2,20}$")


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    cls: str
    created_at: float
    level: int = 1
    xp: int = 0
    kills: int = 0
    deaths: int = 0
    items: tuple[str, ...] = ()
    weapon: str = ""
    armour: str = ""
    inv: int = 0

    def shown(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "class": self.cls,
            "level": self.level,
            "xp": self.xp,
            "kills": self.kills,
            "deaths": self.deaths,
            "items": list(self.items),
            "weapon": self.weapon,
            "armour": self.armour,
            "inv": self.inv,
            "created_at": self.created_at,
        }


def check_new(name: object, cls: object) -> tuple[str, str]:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput("a name is 2 to 20 letters, digits, '-' or '_'", field="name")
    if cls not in CLASSES:
        raise InvalidInput(f"class is one of {', '.join(CLASSES)}", field="class")
    return name, str(cls)


class CharacterShard(Durable):
    def __init__(self, config: GameSettings, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.users: dict[str, dict[str, Character]] = {}

    def snapshot_state(self) -> dict[str, dict[str, Character]]:
        return self.users

    def restore_state(self, state: dict[str, dict[str, Character]]) -> None:
        self.users = state

    def state_size(self) -> int:
        return sum(len(chars) for chars in self.users.values())

    def apply_create(self, user: str, character: Character) -> Character:
        mine = self.users.get(user, {})
        if any(c.name.lower() == character.name.lower() for c in mine.values()):
            raise NameTaken(name=character.name)
        if len(mine) >= self.config.max_characters_per_user:
            raise LimitReached(kind="character", limit=self.config.max_characters_per_user)
        self.users.setdefault(user, {})[character.id] = character
        return character

    def apply_progress(
        self, user: str, character: str, level: int, xp: int, kills: int, deaths: int
    ) -> bool:
        found = self.users.get(user, {}).get(character)
        if (
            found is None
            or xp < found.xp
            or (xp == found.xp and kills + deaths <= found.kills + found.deaths)
        ):
            return False
        self.users[user][character] = replace(found, level=level, xp=xp, kills=kills, deaths=deaths)
        return True

    def apply_inventory(
        self, user: str, character: str, items: list[str], weapon: str, armour: str, inv: int
    ) -> bool:
        found = self.users.get(user, {}).get(character)
        if found is None or inv <= found.inv:
            return False
        self.users[user][character] = replace(
            found, items=tuple(items), weapon=weapon, armour=armour, inv=inv
        )
        return True

    async def ping(self) -> int:
        return len(self.users)

    async def create(self, user: str, name: str, cls: str, *, key: str | None = None) -> dict:
        name, cls = check_new(name, cls)
        character = Character(f"c-{secrets.token_hex(6)}", name, cls, self.clock.time())
        made: Character = await self.execute("create", key=key, user=user, character=character)
        return made.shown()

    async def list_of(self, user: str) -> list[dict[str, Any]]:
        chars = sorted(self.users.get(user, {}).values(), key=lambda c: c.created_at)
        return await self.after_commit([c.shown() for c in chars])

    async def get(self, user: str, character: str) -> dict[str, Any]:
        found = self.users.get(user, {}).get(character)
        if found is None:
            raise CharacterNotFound(character=character)
        return await self.after_commit(found.shown())

    async def find(self, character: str) -> str:
        """The user holding ``character`` on this shard ("" if none)."""
        for user, chars in self.users.items():
            if character in chars:
                return user
        return ""

    async def progress(self, user: str, updates: list[dict[str, Any]]) -> int:
        """Write progress reports (``{"character", "level", "xp", "kills", "deaths"}``,
        and with ``inv`` the inventory: ``items``, ``weapon``, ``armour``); how many
        writes changed something."""
        changed = 0
        for update in updates:
            if "inv" in update:
                changed += bool(await self._inventory(user, update))
            changed += bool(
                await self.execute(
                    "progress",
                    user=user,
                    character=update["character"],
                    level=update["level"],
                    xp=update["xp"],
                    kills=update["kills"],
                    deaths=update["deaths"],
                )
            )
        return changed

    async def _inventory(self, user: str, update: dict[str, Any]) -> bool:
        found = self.users.get(user, {}).get(update["character"])
        if found is None or update["inv"] <= found.inv:
            return False  # a repeat (a room replaying its log), or stale: nothing to write
        items = [str(i) for i in update.get("items", ())]
        worn = (str(update.get("weapon", "")), str(update.get("armour", "")))
        if (
            len(items) > INVENTORY_SIZE
            or any(i not in ITEMS for i in items)
            or any(w and w not in ITEMS for w in worn)
        ):
            raise InvalidInput("not an inventory", character=update["character"])
        done: bool = await self.execute(
            "inventory",
            user=user,
            character=update["character"],
            items=items,
            weapon=worn[0],
            armour=worn[1],
            inv=int(update["inv"]),
        )
        return done


class _CharacterShardProcess(CharacterShard):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(GameSettings.of(settings))
        self.restarts = await recover(self, settings, name)


#: Durable; calls in flight at a crash are retried (creations carry keys,
#: progress only grows).
CharacterShardActor = remote_actor(
    _CharacterShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)
