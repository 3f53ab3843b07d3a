"""Client frames: parsed and checked once, wherever they arrive (the WebSocket
front, the benchmark's plain server, tests). See docs/game.md, "Protocol"."""

from __future__ import annotations

from typing import Any

import orjson

MAX_ID_CHARS = 32
MAX_SAY_CHARS = 200
MAX_INPUT_NUMBER = 2**53
MAX_CLIENT_CLOCK = 1e15
TYPES = (
    "join", "move", "attack", "use", "equip", "unequip", "drop", "say", "ping", "resync",
    "leave",
)  # fmt: skip
#: Frames that go to the simulation's input queue.
INPUTS = ("move", "attack", "use", "equip", "unequip", "drop")
MAX_ITEM_CHARS = 32
SLOTS = ("weapon", "armour")


class BadFrame(ValueError):
    """A frame that breaks the protocol: answered by an ``error`` frame, changes nothing."""

    def __init__(self, message: str, n: int | None = None) -> None:
        super().__init__(message)
        self.n = n


def _int(frame: dict[str, Any], key: str, low: int, high: int) -> int:
    value = frame.get(key)
    if type(value) is not int or not low <= value <= high:
        raise BadFrame(f"{key!r} must be an integer from {low} to {high}", _n(frame))
    return value


def _n(frame: dict[str, Any]) -> int | None:
    n = frame.get("n")
    return n if type(n) is int and 0 < n <= MAX_INPUT_NUMBER else None


def _only(frame: dict[str, Any], keys: set[str]) -> None:
    extra = set(frame) - keys - {"t"}
    if extra:
        raise BadFrame(f"unknown field(s) {sorted(extra)[:5]}", _n(frame))


def parse(text: str | bytes) -> dict[str, Any]:
    """A client frame as a checked dict, or ``BadFrame``."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadFrame("a frame is one JSON object") from None
    if not isinstance(frame, dict):
        raise BadFrame("a frame is one JSON object")
    kind = frame.get("t")
    if kind not in TYPES:
        raise BadFrame(f"'t' must be one of {', '.join(TYPES)}", _n(frame))
    if kind == "join":
        _only(frame, {"room"})
        room = frame.get("room")
        if not isinstance(room, str) or not 1 <= len(room) <= MAX_ID_CHARS:
            raise BadFrame(f"'room' must be a room id (1 to {MAX_ID_CHARS} characters)")
        return {"t": "join", "room": room}
    if kind == "move":
        _only(frame, {"n", "x", "y"})
        n = _int(frame, "n", 1, MAX_INPUT_NUMBER)
        return {"t": "move", "n": n, "x": _int(frame, "x", -1, 10_000),
                "y": _int(frame, "y", -1, 10_000)}  # fmt: skip
    if kind == "attack":
        _only(frame, {"n", "target"})
        n = _int(frame, "n", 1, MAX_INPUT_NUMBER)
        target = frame.get("target")
        if target is not None and (not isinstance(target, str) or not 1 <= len(target) <= 16):
            raise BadFrame("'target' must be an entity id", n)
        return {"t": "attack", "n": n, "target": target}
    if kind in ("use", "equip", "drop"):
        _only(frame, {"n", "item"})
        n = _int(frame, "n", 1, MAX_INPUT_NUMBER)
        item = frame.get("item")
        if not isinstance(item, str) or not 1 <= len(item) <= MAX_ITEM_CHARS:
            raise BadFrame(f"'item' must be an item kind (1 to {MAX_ITEM_CHARS} characters)", n)
        return {"t": kind, "n": n, "item": item}
    if kind == "unequip":
        _only(frame, {"n", "slot"})
        n = _int(frame, "n", 1, MAX_INPUT_NUMBER)
        if frame.get("slot") not in SLOTS:
            raise BadFrame(f"'slot' must be one of {', '.join(SLOTS)}", n)
        return {"t": kind, "n": n, "slot": frame["slot"]}
    if kind == "say":
        _only(frame, {"text"})
        text_ = frame.get("text")
        if not isinstance(text_, str) or not 1 <= len(text_.strip()) <= MAX_SAY_CHARS:
            raise BadFrame(f"'text' must be 1 to {MAX_SAY_CHARS} characters")
        return {"t": "say", "text": text_.strip()}
    if kind == "ping":
        _only(frame, {"c"})
        c = frame.get("c", 0)
        if type(c) not in (int, float) or not -MAX_CLIENT_CLOCK <= c <= MAX_CLIENT_CLOCK:
            raise BadFrame("'c' must be a number (the client's clock)")
        return {"t": "ping", "c": c}
    _only(frame, set())
    return {"t": kind}


def error(code: str, message: str, n: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", "code": code, "message": message}
    if n is not None:
        frame["n"] = n
    return frame
