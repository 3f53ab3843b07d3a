"""Presence: who is connected to which room, on the shard. Ephemeral: never journaled.

A user is present in a room while at least one of their devices (a WebSocket
connection that joined the room) is. Replicas add a device when a connection
joins, remove it when it leaves, and refresh every device they hold every
third of ``presence_ttl_s``; a device not refreshed for ``presence_ttl_s``
expires (its replica died). After a shard restarts it knows no device: each
replica finds out on its next pull and sends all of its devices again, so the
list is rebuilt from the connections that exist.

Members see changes as diffs. Changes within ``presence_batch_s`` are gathered
into one diff per room: ``joins`` (users whose first device arrived) and
``leaves`` (users whose last device went), computed against the list last
announced, so a user who came and went in between is in neither. The list a
joining client gets is that announced list, with its version; every diff has
a higher version, and a client drops diffs not above the version it holds.
Versions start from the wall clock in nanoseconds when the shard starts, so a
restarted shard's versions are above its predecessor's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from actors.chat.model import Device
from actors.runtime.clock import Clock


@dataclass(slots=True)
class _RoomPresence:
    devices: dict[str, dict[str, float]] = field(default_factory=dict)  #: user -> device -> expiry
    names: dict[str, str] = field(default_factory=dict)  #: user -> username
    announced: dict[str, str] = field(default_factory=dict)  #: users last announced
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class Diff:
    room: str
    version: int
    joins: tuple[tuple[str, str], ...]  #: (user id, username)
    leaves: tuple[str, ...]


class Presence:
    def __init__(self, clock: Clock, *, ttl_s: float, max_devices: int) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_devices = max_devices
        self.rooms: dict[str, _RoomPresence] = {}
        self._dirty: set[str] = set()  #: rooms changed since they were last announced
        self.version = time.time_ns()

    def _next_version(self) -> int:
        self.version = max(self.version + 1, time.time_ns())
        return self.version

    def add(self, device: Device) -> bool:
        """Add or refresh ``device``; False if its user has ``max_devices`` others here."""
        room = self.rooms.setdefault(device.room, _RoomPresence())
        devices = room.devices.setdefault(device.user, {})
        if device.device not in devices and len(devices) >= self.max_devices:
            if not devices:
                del room.devices[device.user]
            return False
        if not devices:
            self._mark(device.room, room)
        devices[device.device] = self.clock.now() + self.ttl_s
        room.names[device.user] = device.username
        return True

    def remove(self, room_id: str, user: str, device: str) -> None:
        room = self.rooms.get(room_id)
        devices = room.devices.get(user) if room else None
        if room is None or devices is None or devices.pop(device, None) is None:
            return
        if not devices:
            del room.devices[user]
            self._mark(room_id, room)

    def _mark(self, room_id: str, room: _RoomPresence) -> None:
        room.dirty = True
        self._dirty.add(room_id)

    def remove_user(self, room_id: str, user: str) -> None:
        """Every device of ``user`` leaves the room (kicked, banned, left)."""
        room = self.rooms.get(room_id)
        if room is not None and room.devices.pop(user, None) is not None:
            self._mark(room_id, room)

    def drop_room(self, room_id: str) -> None:
        self.rooms.pop(room_id, None)
        self._dirty.discard(room_id)

    def expire(self) -> list[str]:
        """Remove devices past their expiry; the rooms that changed."""
        now = self.clock.now()
        changed = []
        for room_id, room in self.rooms.items():
            for user in list(room.devices):
                devices = room.devices[user]
                for device in [d for d, expiry in devices.items() if expiry <= now]:
                    del devices[device]
                if not devices:
                    del room.devices[user]
                    self._mark(room_id, room)
                    changed.append(room_id)
        return changed

    def dirty(self) -> list[str]:
        """Rooms changed since they were last announced."""
        return sorted(self._dirty)

    def flush(self, room_id: str) -> Diff | None:
        """The diff since the last announcement of ``room_id``, now announced; None if none."""
        self._dirty.discard(room_id)
        room = self.rooms.get(room_id)
        if room is None or not room.dirty:
            return None
        room.dirty = False
        now = {user: room.names[user] for user in room.devices}
        joins = tuple((u, name) for u, name in now.items() if u not in room.announced)
        leaves = tuple(u for u in room.announced if u not in now)
        room.announced = now
        if not room.devices:
            del self.rooms[room_id]
            if not leaves:
                return None
        if not joins and not leaves:
            return None
        return Diff(room_id, self._next_version(), joins, leaves)

    def listing(self, room_id: str) -> tuple[int, list[tuple[str, str]]]:
        """The announced list of ``room_id`` (user id, username) and its version."""
        room = self.rooms.get(room_id)
        users = sorted(room.announced.items()) if room else []
        return self.version, users

    def devices(self, room_id: str) -> dict[str, int]:
        """Users present in ``room_id`` now (announced or not) and their device counts."""
        room = self.rooms.get(room_id)
        return {u: len(d) for u, d in room.devices.items()} if room else {}

    def __len__(self) -> int:
        return sum(len(d) for room in self.rooms.values() for d in room.devices.values())


__all__ = ["Diff", "Presence"]
