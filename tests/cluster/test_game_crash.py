"""Kill a game room mid-game by removing the node it runs on; its players resync.

The room's actor may only run on nodes carrying the test's marker resource,
so it is on the worker for certain; it snapshots and logs to Redis, so a
replacement node restarts it with the world as it was. Two players are
connected through a replica's ``Hub`` (what the WebSocket front runs), with
stand-in connections that record the frames they would send.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from actors.game.client import GameClient
from actors.game.directory import BY_USER, RoomInfo, new_room_id
from actors.game.room import GameRoomActor, stream_of
from actors.runtime.settings import Settings
from actors.runtime.supervision import get_or_create
from apps.game.ws import Hub
from tests.cluster.conftest import MARKER, remove_and_wait
from tests.conftest import REDIS_URL, until

ON_MARKED_NODE = {"resources": {MARKER: 0.01}}


class Player:
    """What a WebSocket ``Connection`` is to the hub: an id, a user, a sink."""

    def __init__(self, user: str) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.user_id = user
        self.link: Any = None
        self.frames: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.n = 0

    def send_line(self, text: str) -> None:
        self.frames.append(orjson.loads(text))

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def end(self, code: int, reason: str) -> None:
        self.closed = code

    async def open_chat(self, chat_room: str, name: str) -> None:
        """The room's chat (the chat service's, tested there) is not followed here."""

    async def close_chat(self) -> None:
        pass

    def me(self) -> str:
        return next(f["me"] for f in self.frames if f["t"] == "full")

    def where(self) -> tuple[int, int]:
        x = y = -1
        me = self.me()
        for f in self.frames:
            for e in [*f.get("ents", []), *f.get("a", []), *f.get("u", [])]:
                if e["i"] == me:
                    x, y = e.get("x", x), e.get("y", y)
        return x, y

    def move(self, dx: int, dy: int) -> dict[str, Any]:
        x, y = self.where()
        self.n += 1
        return {"t": "move", "n": self.n, "x": x + dx, "y": y + dy}

    def acked(self, n: int) -> bool:
        return any(f["t"] in ("p", "full") and f.get("n", 0) >= n for f in self.frames)


async def test_a_room_whose_node_is_removed_comes_back_and_its_players_resync(
    cluster: Any, worker_node: Any, tmp_path: Any
) -> None:
    # Given a room on a worker node, storing to Redis, with two connected players
    worker = worker_node()
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        namespace=f"cluster-{tag}",
        store_prefix=f"cluster-{tag}",
        data_dir=tmp_path,
        store_url=REDIS_URL,
        game_world_events=False,
        game_snapshot_every_s=0.5,
    )
    game = GameClient(settings)
    await game.start()
    info = RoomInfo(new_room_id(), "meadow", "world", "", False, "", "owner", 8, BY_USER, 0.0)
    opened = await game.directory.call("open_room", info)
    get_or_create(
        GameRoomActor,
        stream_of(info.id),
        settings,
        opened,
        namespace=settings.namespace,
        **ON_MARKED_NODE,
    )
    hub = Hub(game)
    players = [Player("ana"), Player("bo")]
    for p in players:
        character = {"id": f"c-{p.user_id}", "name": p.user_id, "class": "warrior", "xp": 0}
        await game.call_room(info.id, "reserve", p.user_id, character)
        await hub.join(p, info.id)  # type: ignore[arg-type]
    ana, bo = players
    stats = await game.call_room(info.id, "stats")
    assert stats["node_id"] == worker.node_id
    first = ana.move(0, 1)
    hub.links[info.id].send_input(ana, first)  # type: ignore[arg-type]
    await until(lambda: ana.acked(first["n"]), within_s=20, what="the first step applied")
    stepped_to = (first["x"], first["y"])
    await until(
        lambda: game.call_room(info.id, "stats"),
        lambda s: s["tick"] > stats["tick"] + 20,
        within_s=20,
        what="a snapshot after the step",
    )

    # When the node is removed mid-game and a replacement joins
    marks = [len(p.frames) for p in players]
    remove_and_wait(cluster, worker)
    replacement = worker_node()

    # Then each player gets one fresh full state marked resync, and no close
    for p, mark in zip(players, marks, strict=True):
        await until(
            lambda p=p, mark=mark: [f for f in p.frames[mark:] if f["t"] == "full"],
            within_s=60,
            what="a resync",
        )
        resyncs = [f for f in p.frames[mark:] if f["t"] == "full"]
        assert len(resyncs) == 1 and resyncs[0]["resync"] is True and p.closed is None
    resync = next(f for f in ana.frames[marks[0] :] if f["t"] == "full")
    mine = next(e for e in resync["ents"] if e["i"] == ana.me())
    assert (mine["x"], mine["y"]) == stepped_to  # the step before the crash survived
    after = await game.call_room(info.id, "stats")
    assert after["node_id"] == replacement.node_id and after["restarts"] >= 1

    # And the game goes on: ana steps, bo sees it
    step = ana.move(0, -1)
    hub.links[info.id].send_input(ana, step)  # type: ignore[arg-type]
    await until(
        lambda: any(
            e["i"] == ana.me() and e.get("y") == step["y"]
            for f in bo.frames
            if f["t"] == "p"
            for e in f.get("u", [])
        ),
        within_s=20,
        what="bo sees ana's step after the crash",
    )
