"""Zones: the tile maps of ``actors/game/maps/*.json``, walking and line of sight.

A map is read once per process and shared: it never changes while a room runs.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAPS_DIR = Path(__file__).resolve().parent / "maps"
ZONE_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
FLOOR, WALL, WATER = "floor", "wall", "water"
KINDS = (FLOOR, WALL, WATER)


class MapError(ValueError):
    """A map file that breaks the format."""


@dataclass(frozen=True)
class Zone:
    zone: str
    name: str
    time_zone: str
    width: int
    height: int
    #: Tile kinds, row by row: ``kinds[y][x]``.
    kinds: tuple[tuple[str, ...], ...]
    spawns: tuple[tuple[int, int], ...]
    monsters: tuple[dict[str, Any], ...]
    loot: tuple[dict[str, Any], ...]
    portals: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    pvp: bool
    raw: dict[str, Any]

    def inside(self, x: int, y: int) -> bool:
        return 0 <= x < self.width and 0 <= y < self.height

    def kind(self, x: int, y: int) -> str:
        return self.kinds[y][x] if self.inside(x, y) else WALL

    def walkable(self, x: int, y: int) -> bool:
        return self.kind(x, y) == FLOOR

    def line_of_sight(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """Whether no wall lies strictly between two tiles (Bresenham's line;
        water does not block sight)."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        x, y = x0, y0
        while (x, y) != (x1, y1):
            doubled = 2 * err
            if doubled >= dy:
                err += dy
                x += sx
            if doubled <= dx:
                err += dx
                y += sy
            if (x, y) != (x1, y1) and self.kind(x, y) == WALL:
                return False
        return True

    def portal_at(self, x: int, y: int) -> dict[str, Any] | None:
        for portal in self.portals:
            if portal["x"] == x and portal["y"] == y:
                return portal
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "time_zone": self.time_zone,
        }


def distance(x0: int, y0: int, x1: int, y1: int) -> int:
    """Chebyshev distance: a diagonal step is one step."""
    return max(abs(x1 - x0), abs(y1 - y0))


def parse(raw: dict[str, Any]) -> Zone:
    """A zone from a map file's JSON, checked."""
    try:
        if raw.get("format") != 1:
            raise MapError("format must be 1")
        zone, width, height = raw["zone"], raw["width"], raw["height"]
        if not isinstance(zone, str) or not ZONE_NAME.match(zone):
            raise MapError(f"bad zone name {zone!r}")
        legend: dict[str, str] = raw["legend"]
        if any(kind not in KINDS for kind in legend.values()):
            raise MapError(f"legend kinds must be among {KINDS}")
        rows = raw["tiles"]
        if len(rows) != height or any(len(row) != width for row in rows):
            raise MapError("tiles must be `height` rows of `width` characters")
        kinds = tuple(tuple(legend[c] for c in row) for row in rows)
        parsed = Zone(
            zone=zone,
            name=str(raw["name"]),
            time_zone=str(raw.get("time_zone", "UTC")),
            width=width,
            height=height,
            kinds=kinds,
            spawns=tuple((s["x"], s["y"]) for s in raw["spawns"]),
            monsters=tuple(raw.get("monsters", [])),
            loot=tuple(raw.get("loot", [])),
            portals=tuple(raw.get("portals", [])),
            events=tuple(raw.get("events", [])),
            pvp=bool(raw.get("pvp", False)),
            raw=raw,
        )
    except (KeyError, TypeError) as error:
        raise MapError(f"missing or malformed field: {error}") from error
    if not parsed.spawns:
        raise MapError("a zone needs a spawn point")
    for thing in [*({"x": x, "y": y} for x, y in parsed.spawns), *parsed.monsters,
                  *parsed.loot, *parsed.portals, *parsed.events]:  # fmt: skip
        if not parsed.walkable(thing["x"], thing["y"]):
            raise MapError(f"{thing} is not on a floor tile")
    return parsed


@functools.cache
def load(zone: str) -> Zone:
    """The zone called ``zone`` (``KeyError`` if there is none)."""
    if not ZONE_NAME.match(zone):
        raise KeyError(zone)
    path = MAPS_DIR / f"{zone}.json"
    if not path.is_file():
        raise KeyError(zone)
    return parse(json.loads(path.read_text()))


def zones() -> list[str]:
    return sorted(path.stem for path in MAPS_DIR.glob("*.json"))
