"""Remove the node that holds a chat room's shard, in the middle of a conversation.

Shard 0 may only run on nodes carrying the test's marker resource, so it is on
the worker for certain, and the room is made there; shard 1 is on the head.
The shards journal to Redis, so a replacement node can restart shard 0 with
everything it acknowledged.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from actors.chat.client import ChatClient, Post
from actors.chat.shard import SHARD_PREFIX, ChatShardActor
from actors.runtime.settings import Settings
from actors.runtime.shards import shard_names
from actors.runtime.supervision import get_or_create
from tests.cluster.conftest import HEAD_MARKER, MARKER, remove_and_wait
from tests.conftest import REDIS_URL, until

ON_MARKED_NODE = {"resources": {MARKER: 0.01}}
ON_HEAD = {"resources": {HEAD_MARKER: 0.01}}


def isolated_settings(tmp_path: Any, **overrides: Any) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        namespace=f"cluster-{tag}", store_prefix=f"cluster-{tag}", data_dir=tmp_path, **overrides
    )


def user_on(chat: ChatClient, shard: int) -> str:
    """A user id whose own rooms live on ``shard``."""
    while True:
        user = uuid.uuid4().hex[:16]
        if chat.shards.index(f"user:{user}") == shard:
            return user


async def test_a_room_keeps_every_acknowledged_message_when_its_shard_s_node_goes(
    cluster, worker_node, tmp_path
):
    # Given a room on a shard on a worker node, journaling to Redis, and a
    # member connected to it through a client (a replica's)
    worker = worker_node()
    settings = isolated_settings(
        tmp_path, store_url=REDIS_URL, chat_shards=2, chat_send_burst=1_000, chat_presence_ttl_s=6
    )
    for name, placement in zip(
        shard_names(SHARD_PREFIX, 2), (ON_MARKED_NODE, ON_HEAD), strict=True
    ):
        get_or_create(
            ChatShardActor, name, settings, name, namespace=settings.namespace, **placement
        )
    chat = ChatClient(settings)
    await chat.start()
    owner = user_on(chat, 0)
    room = (await chat.create_room(owner, "owner", kind="public", name="talk"))["id"]
    assert chat.shards.index(room) == 0
    stats = await chat.shards[0].call("stats")
    assert stats["node_id"] == worker.node_id
    await chat.join(room, "bob", "bob")
    seen: list[Post] = []
    watch, answer = await chat.open(room, "bob", "bob", sink=lambda post, text: seen.append(post))
    await chat.catch_up(watch, answer["visible_seq"])
    acked: dict[int, str] = {}

    async def send(i: int) -> None:
        sent = await chat.send(room, owner, f"m{i}", client_id=f"c{i}")
        acked[sent["seq"]] = f"m{i}"

    for i in range(20):
        await send(i)

    # When the node is removed mid-conversation and a replacement joins
    in_flight = [asyncio.ensure_future(send(i)) for i in range(20, 30)]
    remove_and_wait(cluster, worker)
    replacement = worker_node()
    await asyncio.gather(*in_flight)
    for i in range(30, 40):
        await send(i)

    # Then the shard runs on the new node with every acknowledged message, in order, once
    after = await chat.shards[0].call("stats")
    assert after["node_id"] == replacement.node_id and after["restarts"] == 1
    page = await chat.history(room, owner, limit=500)
    assert {m["seq"]: m["text"] for m in page["messages"]} == acked
    assert len(acked) == 40

    # And the connected member got every message in order with no gap and no duplicate
    def messages() -> list[tuple[int, str]]:
        return [(p.event.seq, p.event.text) for p in seen if p.event and p.event.kind == "message"]

    await until(messages, lambda got: len(got) >= 40, within_s=120, what="every message delivered")
    assert messages() == sorted(acked.items())

    # And presence is rebuilt from the connection that exists
    present = await until(
        lambda: chat.presence(room, owner),
        lambda users: [u["user_id"] for u in users] == ["bob"],
        within_s=120,
        what="bob present again",
    )
    assert present[0]["devices"] == 1
    await chat.close_watch(watch)
    await chat.close()
