"""Pub/sub's Python API against real broker actors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import ray

from actors.pubsub.broker import Message
from actors.pubsub.client import PubSubClient, SlowConsumer, Subscription
from actors.pubsub.errors import NoReply
from actors.runtime.errors import InvalidInput
from actors.runtime.settings import Settings


@pytest.fixture
async def clients(
    ray_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[[], PubSubClient]]:
    settings = ray_settings(pubsub_brokers=2)
    made: list[PubSubClient] = []

    def make() -> PubSubClient:
        client = PubSubClient(settings)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def take(subscription: Subscription, count: int) -> list[Message]:
    return [await anext(subscription) for _ in range(count)]


async def test_subscribers_get_matching_messages_in_order(clients):
    publisher, subscriber = clients(), clients()
    await publisher.start()
    orders = await subscriber.subscribe("orders.*")
    everything = await subscriber.subscribe(">")
    for i in range(1, 11):
        await publisher.publish(f"orders.{i % 2}", f"o{i}".encode())
        await publisher.publish("audit.log", f"a{i}".encode())
    got = await take(orders, 10)
    assert [m.payload for m in got] == [f"o{i}".encode() for i in range(1, 11)]
    per_topic = {t: [m.seq for m in got if m.topic == t] for t in ("orders.0", "orders.1")}
    assert per_topic == {"orders.0": [1, 2, 3, 4, 5], "orders.1": [1, 2, 3, 4, 5]}
    assert len(await take(everything, 20)) == 20


async def test_a_live_subscription_closes_the_gap_of_a_broker_crash_from_history(clients):
    publisher, subscriber = clients(), clients()
    live = await subscriber.subscribe("room.1")
    for i in range(1, 21):
        await publisher.publish("room.1", f"m{i}".encode())
    assert [m.seq for m in await take(live, 20)] == list(range(1, 21))

    # The broker owning the topic crashes; publishing goes on through the restart.
    ray.kill(publisher.brokers.owner("room.1").handle, no_restart=False)
    rest = asyncio.create_task(take(live, 21))
    for i in range(21, 41):
        await publisher.publish("room.1", f"m{i}".encode())
    # Messages published before the subscriber followed the new incarnation
    # were not delivered live; the next live one shows the gap, which history
    # fills. Keep publishing until one gets through.
    deadline = asyncio.get_running_loop().time() + 60
    while not rest.done() and asyncio.get_running_loop().time() < deadline:
        await publisher.publish("room.1", b"tick")
        await asyncio.wait([rest], timeout=0.5)
    got = await rest
    assert [m.seq for m in got] == list(range(21, 42))  # no gap, no duplicate
    assert [m.payload for m in got[:20]] == [f"m{i}".encode() for i in range(21, 41)]


async def test_resuming_delivers_history_then_live_with_no_gap_or_duplicate(clients):
    publisher, subscriber = clients(), clients()
    for i in range(1, 31):
        await publisher.publish("feed.a", f"a{i}".encode())
    await publisher.publish("feed.b", b"b1")
    resumed = await subscriber.subscribe("feed.*", resume={"feed.a": 25, "feed.b": 0})
    await publisher.publish("feed.a", b"a31")
    got = await take(resumed, 7)
    assert [(m.topic, m.seq) for m in got] == [
        *[("feed.a", s) for s in range(26, 31)],
        ("feed.b", 1),
        ("feed.a", 31),
    ]
    with pytest.raises(InvalidInput):
        await subscriber.subscribe("feed.*", resume={"other.topic": 1})


async def test_a_queue_group_gives_each_message_to_one_member_across_clients(clients):
    publisher, first, second = clients(), clients(), clients()
    members = [
        await first.subscribe("work.*", group="w"),
        await first.subscribe("work.>", group="w"),
        await second.subscribe("work.*", group="w"),
    ]
    watchers = [await first.subscribe("work.*"), await second.subscribe("work.*")]
    for i in range(30):
        await publisher.publish(f"work.{i % 3}", str(i).encode())
    # A fence on each topic, published after the rest: a broker posts to each
    # replica in order, so once both clients' watchers have the fences, every
    # delivery of the 30 (a duplicate too, were there one) has reached the
    # members' queues.
    for topic in ("work.0", "work.1", "work.2"):
        await publisher.publish(topic, b"fence")
    for watcher in watchers:
        assert len(await take(watcher, 33)) == 33
    got = [m.payload for member in members for m in await take(member, member.pending)]
    assert sorted(p for p in got if p != b"fence") == sorted(str(i).encode() for i in range(30))
    assert got.count(b"fence") == 3


async def test_request_reply_between_clients(clients):
    requester, responder = clients(), clients()
    service = await responder.subscribe("svc.echo", group="echo")

    async def serve() -> None:
        async for request in service:
            await responder.reply(request, b"echo:" + request.payload)

    server = asyncio.create_task(serve())
    try:
        answer = await requester.request("svc.echo", b"hi", timeout_s=30)
        assert answer.payload == b"echo:hi" and answer.seq == 0
        with pytest.raises(NoReply):
            await requester.request("svc.nobody", b"?", timeout_s=0.5)
    finally:
        server.cancel()


async def test_a_slow_consumer_is_closed_without_holding_up_others(clients):
    publisher, subscriber = clients(), clients()
    slow = await subscriber.subscribe("feed", max_pending=5)
    fast = await subscriber.subscribe("feed")
    for i in range(20):
        await publisher.publish("feed", str(i).encode())
    assert len(await take(fast, 20)) == 20
    with pytest.raises(SlowConsumer):
        await take(slow, 20)
