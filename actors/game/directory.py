"""The rooms list: which rooms are open, their labels, owners and join codes.

One durable actor. A room is opened here (within quotas) before its actor is
started, and closed here by its actor when it is disposed; an id this list
does not hold is a 404 and starts nothing. Player counts are reported by the
rooms and are ephemeral (a restarted directory learns them again from the
next reports).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from actors.game.errors import RoomNotFound
from actors.game.settings import GameSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import LimitReached
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

log = logging.getLogger(__name__)

DIRECTORY_NAME = "game-directory"
MAX_LIST = 200
#: Rooms made by a user count against their quota; quick-join and match rooms do not.
BY_USER, QUICK, MATCH = "user", "quick", "match"


@dataclass(frozen=True)
class RoomInfo:
    id: str
    zone: str
    mode: str
    label: str
    private: bool
    code: str
    owner: str
    max_players: int
    made_by: str
    created_at: float

    def shown(self, players: int = 0, *, with_code: bool = False) -> dict[str, Any]:
        shown = {
            "id": self.id,
            "zone": self.zone,
            "mode": self.mode,
            "label": self.label,
            "private": self.private,
            "players": players,
            "max_players": self.max_players,
        }
        if with_code and self.private:
            shown["code"] = self.code
        return shown

    def as_data(self) -> dict[str, Any]:
        return dict(vars(self))


def new_room_id() -> str:
    return f"g-{secrets.token_hex(8)}"


class Directory(Durable):
    def __init__(self, config: GameSettings, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.rooms: dict[str, RoomInfo] = {}
        #: Ephemeral: seats taken or reserved, as last reported by each room (plus
        #: quick joins handed out since).
        self.players: dict[str, int] = {}

    def snapshot_state(self) -> dict[str, RoomInfo]:
        return self.rooms

    def restore_state(self, state: dict[str, RoomInfo]) -> None:
        self.rooms = state

    def state_size(self) -> int:
        return len(self.rooms)

    def apply_open(self, info: RoomInfo) -> RoomInfo:
        if info.id in self.rooms:
            return self.rooms[info.id]
        if len(self.rooms) >= self.config.max_rooms:
            raise LimitReached(kind="room", limit=self.config.max_rooms)
        if info.made_by == BY_USER:
            mine = sum(
                1 for r in self.rooms.values() if r.owner == info.owner and r.made_by == BY_USER
            )
            if mine >= self.config.max_rooms_per_user:
                raise LimitReached(kind="room", limit=self.config.max_rooms_per_user)
        self.rooms[info.id] = info
        return info

    def apply_close(self, room: str) -> bool:
        self.players.pop(room, None)
        return self.rooms.pop(room, None) is not None

    async def ping(self) -> int:
        return len(self.rooms)

    async def open_room(self, info: RoomInfo, *, key: str | None = None) -> dict[str, Any]:
        opened: RoomInfo = await self.execute("open", key=key, info=info)
        return opened.as_data()

    async def close_room(self, room: str) -> bool:
        return bool(await self.execute("close", room=room))

    async def get(self, room: str) -> dict[str, Any]:
        info = self.rooms.get(room)
        if info is None:
            raise RoomNotFound(room=room)
        return await self.after_commit(info.as_data())

    async def report(self, room: str, players: int) -> None:
        if room in self.rooms:
            self.players[room] = players

    async def quick(self, zone: str, owner: str) -> dict[str, Any]:
        """A public quick-join room of ``zone`` with a free seat, opened if none has one.
        Counts the seat handed out until the room reports again."""
        for info in sorted(self.rooms.values(), key=lambda r: r.created_at):
            if (
                info.zone == zone
                and not info.private
                and info.made_by == QUICK
                and self.players.get(info.id, 0) < info.max_players
            ):
                self.players[info.id] = self.players.get(info.id, 0) + 1
                return await self.after_commit(info.as_data())
        info = RoomInfo(
            new_room_id(),
            zone,
            "world",
            zone,
            False,
            "",
            owner,
            self.config.max_players_per_room,
            QUICK,
            self.clock.time(),
        )
        opened = await self.open_room(info)
        self.players[info.id] = 1
        return opened

    async def list(
        self,
        *,
        zone: str | None = None,
        mode: str | None = None,
        label: str | None = None,
        open_only: bool = False,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        found = []
        for info in sorted(self.rooms.values(), key=lambda r: r.created_at):
            players = self.players.get(info.id, 0)
            if info.private or (zone and info.zone != zone) or (mode and info.mode != mode):
                continue
            if (label and info.label != label) or (open_only and players >= info.max_players):
                continue
            found.append(info.shown(players))
            if len(found) >= min(limit, MAX_LIST):
                break
        return await self.after_commit(found)

    async def check_code(self, room: str, code: str) -> bool:
        info = self.rooms.get(room)
        return info is not None and hmac.compare_digest(info.code.encode(), code.encode())

    async def players_of(self, room: str) -> int:
        return self.players.get(room, 0)


class _DirectoryProcess(Directory):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(GameSettings.of(settings))
        self.settings = settings
        self.restarts = await recover(self, settings, name)
        self.world_events = 0
        if self.config.world_events:
            self._events = asyncio.create_task(self._world_events())

    async def _world_events(self) -> None:
        """Schedule the zones' events, then hand each one to the rooms of its zone."""
        from actors.game import events
        from actors.pubsub.client import PubSubClient
        from actors.scheduler.client import SchedulerClient

        scheduler = SchedulerClient(self.settings)
        pubsub = PubSubClient(self.settings)
        while True:
            try:
                await pubsub.start()
                await events.ensure_schedules(scheduler)
                await events.follow(pubsub, self._deliver)
            except Exception:
                log.exception("world events: following again in 5 s")
            await asyncio.sleep(5)

    async def _deliver(self, event: dict[str, Any]) -> None:
        import ray

        from actors.game.room import stream_of
        from actors.runtime.supervision import call

        self.world_events += 1
        for info in list(self.rooms.values()):
            if info.zone != event.get("zone"):
                continue
            try:
                handle = ray.get_actor(stream_of(info.id), namespace=self.settings.namespace)
                await call(handle, "world_event", event["kind"], event["monster"], event["x"],
                           event["y"])  # fmt: skip
            except Exception as error:
                log.warning("world event not given to room %s (%r)", info.id, error)

    async def world_events_seen(self) -> int:
        return self.world_events


DirectoryActor = remote_actor(_DirectoryProcess, restart=Restart.PERMANENT)
