"""What each player sees: interest management, full states, delta patches, encoding.

A ``View`` belongs to one connected player. It remembers what it last sent
(each entity's version and fields) and builds from the simulation either a
``full`` frame (everything in view) or a ``p`` patch: entities that came
into view (whole), fields that changed for those still in view, ids that
left, and the events that touch what it sees. An entity is in view when it
lies within ``radius`` tiles (Chebyshev) of the player.

``Snapshot`` caches each entity's public fields for one patch round, so the
work per entity is done once however many players see it. ``encode`` is the
wire encoding (JSON with short keys, see docs/game.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from actors.game.sim import Drop, Gold, Monster, Player, Sim

if TYPE_CHECKING:
    from actors.chat.client import Post


def encode(frame: dict[str, Any]) -> str:
    """A frame as the text of one WebSocket message."""
    return orjson.dumps(frame).decode()


def chat_frame(seq: int, at: float, name: str, text: str) -> str:
    """A line of room chat as the ``chat`` frame (``at``: seconds, sent in ms)."""
    return encode({"t": "chat", "seq": seq, "from": name, "text": text, "at": int(at * 1000)})


def chat_line(post: Post) -> str:
    """A chat service post as a game client's frame: messages only, else ""."""
    event = post.event
    if post.kind != "event" or event is None or event.kind != "message":
        return ""
    return chat_frame(event.seq, event.at, event.username, event.text)


def public(entity: Player | Monster | Gold | Drop) -> dict[str, Any]:
    """An entity as clients see it."""
    if isinstance(entity, Drop):
        return {"i": entity.id, "k": "i", "c": entity.item, "x": entity.x, "y": entity.y}
    if isinstance(entity, Gold):
        return {
            "i": entity.id,
            "k": "g",
            "c": "gold",
            "x": entity.x,
            "y": entity.y,
            "v": entity.amount,
        }
    shown: dict[str, Any]
    if isinstance(entity, Player):
        shown = {"i": entity.id, "k": "p", "c": entity.cls, "n": entity.name}
    else:
        shown = {"i": entity.id, "k": "m", "c": entity.kind, "n": entity.kind}
    shown.update(x=entity.x, y=entity.y, h=entity.hp, H=entity.max_hp, l=entity.level)
    if not entity.alive:
        shown["d"] = 1
    return shown


class Snapshot:
    """The simulation's entities, with their public fields, for one patch round."""

    def __init__(self, sim: Sim, cell: int) -> None:
        self.sim = sim
        self.cell = max(1, cell)
        self.entities: dict[str, tuple[int, int, int, Player | Monster | Gold | Drop]] = {}
        self.grid: dict[tuple[int, int], list[str]] = {}
        for entity in sim.entities():
            self.entities[entity.id] = (entity.x, entity.y, entity.version, entity)
            key = (entity.x // self.cell, entity.y // self.cell)
            self.grid.setdefault(key, []).append(entity.id)
        self._public: dict[str, dict[str, Any]] = {}

    def public(self, entity_id: str) -> dict[str, Any]:
        shown = self._public.get(entity_id)
        if shown is None:
            shown = self._public[entity_id] = public(self.entities[entity_id][3])
        return shown

    def near(self, x: int, y: int, radius: int) -> list[str]:
        """Ids of entities within ``radius`` of (x, y)."""
        found = []
        cx0, cx1 = (x - radius) // self.cell, (x + radius) // self.cell
        cy0, cy1 = (y - radius) // self.cell, (y + radius) // self.cell
        for cx in range(cx0, cx1 + 1):
            for cy in range(cy0, cy1 + 1):
                for entity_id in self.grid.get((cx, cy), ()):
                    ex, ey, _, _ = self.entities[entity_id]
                    if abs(ex - x) <= radius and abs(ey - y) <= radius:
                        found.append(entity_id)
        return found


class View:
    """One player's view of its room."""

    def __init__(self, seat: str, radius: int) -> None:
        self.seat = seat
        self.radius = radius
        #: id -> (version, fields) as last sent
        self.seen: dict[str, tuple[int, dict[str, Any]]] = {}
        self.you: dict[str, Any] = {}
        self.last_n = 0

    def _visible(self, snap: Snapshot) -> list[str]:
        me = snap.sim.players[self.seat]
        return snap.near(me.x, me.y, self.radius)

    def full(self, snap: Snapshot, room: dict[str, Any], *, resync: bool) -> dict[str, Any]:
        sim = snap.sim
        me = sim.players[self.seat]
        self.seen = {}
        ents = []
        for entity_id in self._visible(snap):
            shown = snap.public(entity_id)
            self.seen[entity_id] = (snap.entities[entity_id][2], shown)
            ents.append(shown)
        self.you = sim.you(self.seat)
        self.last_n = me.last_n
        return {
            "t": "full",
            "k": sim.tick,
            "n": me.last_n,
            "room": room,
            "me": me.id,
            "hz": sim.tick_hz,
            "radius": self.radius,
            "ents": ents,
            "you": self.you,
            "resync": resync,
        }

    def patch(
        self, snap: Snapshot, events: list[dict[str, Any]], *, heartbeat: bool = False
    ) -> dict[str, Any] | None:
        """The delta since the last frame, or None when nothing changed (and no
        ``heartbeat`` is due)."""
        sim = snap.sim
        me = sim.players[self.seat]
        added: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        visible = self._visible(snap)
        now_seen: dict[str, tuple[int, dict[str, Any]]] = {}
        for entity_id in visible:
            version = snap.entities[entity_id][2]
            before = self.seen.get(entity_id)
            if before is not None and before[0] == version:
                now_seen[entity_id] = before
                continue
            shown = snap.public(entity_id)
            now_seen[entity_id] = (version, shown)
            if before is None:
                added.append(shown)
                continue
            old = before[1]
            changed = {key: value for key, value in shown.items() if old.get(key) != value}
            if "d" in old and "d" not in shown:
                changed["d"] = 0
            if changed:
                changed["i"] = entity_id
                updated.append(changed)
        removed = [entity_id for entity_id in self.seen if entity_id not in now_seen]
        self.seen = now_seen
        mine = [
            event
            for event in events
            if any(event.get(key) in now_seen or event.get(key) == me.id for key in ("i", "s", "d"))
        ]
        you = sim.you(self.seat)
        you_changed = {key: value for key, value in you.items() if self.you.get(key) != value}
        # The cooldown counts down every tick: it alone is not worth a patch.
        worth = bool(added or updated or removed or mine or set(you_changed) - {"cd"})
        if not worth and not heartbeat and me.last_n == self.last_n:
            return None
        self.you = you
        self.last_n = me.last_n
        frame: dict[str, Any] = {"t": "p", "k": sim.tick, "n": me.last_n}
        if added:
            frame["a"] = added
        if updated:
            frame["u"] = updated
        if removed:
            frame["r"] = removed
        if mine:
            frame["e"] = mine
        if you_changed:
            frame["you"] = you_changed
        return frame
