"""Pub/sub's Python API against real broker actors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import ray

from actors.pubsub_client import PubSubClient, SlowConsumer, Subscription
from actors.settings import Settings


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


async def take(subscription: Subscription, count: int) -> list[tuple[str, int, bytes]]:
    got = []
    async for topic, seq, _, payload in subscription:
        got.append((topic, seq, payload))
        if len(got) == count:
            break
    return got


async def test_subscribers_get_matching_messages_in_order(clients):
    publisher, subscriber = clients(), clients()
    await publisher.start()
    orders = await subscriber.subscribe("orders.*")
    everything = await subscriber.subscribe(">")
    for i in range(1, 11):
        await publisher.publish(f"orders.{i % 2}", f"o{i}".encode())
        await publisher.publish("audit.log", f"a{i}".encode())
    got = await take(orders, 10)
    assert [payload for _, _, payload in got] == [f"o{i}".encode() for i in range(1, 11)]
    per_topic = {t: [s for tt, s, _ in got if tt == t] for t in ("orders.0", "orders.1")}
    assert per_topic == {"orders.0": [1, 2, 3, 4, 5], "orders.1": [1, 2, 3, 4, 5]}
    assert len(await take(everything, 20)) == 20


async def test_resume_from_history_closes_the_gap_after_a_broker_crash(clients):
    publisher, subscriber = clients(), clients()
    live = await subscriber.subscribe("room.1")
    for i in range(1, 21):
        await publisher.publish("room.1", f"m{i}".encode())
    seen = {seq for _, seq, _ in await take(live, 20)}

    # The broker owning the topic crashes; publishing goes on through the restart.
    ray.kill(publisher._broker("room.1").handle, no_restart=False)
    for i in range(21, 41):
        await publisher.publish("room.1", f"m{i}".encode())

    # Live delivery may have missed some; history after the last seen closes the gap.
    resumed = await publisher.history("room.1", after_seq=max(seen), limit=100)
    assert resumed["complete"] and resumed["last_seq"] == 40
    seen |= {seq for seq, _, _ in resumed["messages"]}
    assert seen == set(range(1, 41))
    assert [p for _, _, p in resumed["messages"]] == [f"m{i}".encode() for i in range(21, 41)]


async def test_a_slow_consumer_is_closed_without_holding_up_others(clients):
    publisher, subscriber = clients(), clients()
    slow = await subscriber.subscribe("feed", max_pending=5)
    fast = await subscriber.subscribe("feed")
    for i in range(20):
        await publisher.publish("feed", str(i).encode())
    assert len(await take(fast, 20)) == 20
    with pytest.raises(SlowConsumer):
        await take(slow, 20)
